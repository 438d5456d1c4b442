"""What a replica's container is, as docker-py create() arguments: the pure half of the Docker backend.

Everything the backend asks the engine for is decided here from values, without
an engine: the labels that record what runs (`cortexd.managed`, `cortexd.instance`,
`cortexd.api`, `cortexd.replica`, `cortexd.spec-hash`, `cortexd.gpus`: what runs is
re-read from them, docs/architecture.md "Rules the layers keep"), mounts, limits,
GPUs and hardening (container_create_args()), the runtime spec archive copied in
before start, and the user the container runs as.
container_state.py reads the engine's answers back; docker_engine.py makes the
calls; docker.py (DockerBackend) puts them together.

Containers see the project directory (and model directories and python_path
outside it) read-only at the SAME absolute paths as on the host, so the
runtime spec needs no rewriting and tracebacks name the user's real files; the
project is also at /mnt/project, read-only, where Cortex mounted it (project_mount.py).
Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cortexd.backends.base import WorkerLaunch
from cortexd.backends.isolation import layered_environment, replica_paths, unreadable_by
from cortexd.backends.project_mount import MOUNT_POINT, ProjectMount, docker_mount
from cortexd.spec.model import APISpec
from predictor_runtime.contract import RuntimeSpec

CONTAINER_PORT = 8888
IMAGE_USER = "10001:10001"  # the image's `cortexd` user, used when the daemon runs as root
SPEC_DIR = "/etc/cortexd"  # an anonymous volume: the root filesystem is read-only
SPEC_IN_CONTAINER = f"{SPEC_DIR}/spec.json"
IMAGE_HOME = "/home/cortexd"
# the bridge network replicas join: no traffic between containers (a replica cannot call another
# API's container directly), the host still reaches each one
NETWORK = "cortexd"
NETWORK_OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}
PIDS_LIMIT = 512  # per container, threads included; raised for many processes x threads
# what each tmpfs (/tmp, HOME) may hold without compute.mem (and without CORTEXD_TMPFS_SIZE):
# a tmpfs is memory, and Docker's default (half of the host's RAM, each) let one replica put
# gigabytes in RAM unbounded
DEFAULT_TMPFS_BYTES = 2**30
LABEL_MANAGED = "cortexd.managed"
LABEL_INSTANCE = "cortexd.instance"
LABEL_API = "cortexd.api"
LABEL_REPLICA = "cortexd.replica"
LABEL_SPEC_HASH = "cortexd.spec-hash"
LABEL_GPUS = "cortexd.gpus"
LABEL_WORKER = "cortexd.worker"  # a job's worker (no cortexd.replica label: list() never shows it)
# where a worker's container finds the daemon's unix socket for workers (bound in: no port is
# opened to the bridge network for it)
WORKER_SOCKET = "/run/cortexd/jobs.sock"


def instance_for_home(home: Path | str) -> str:
    """The instance label of the daemon whose home is `home`: two daemons never adopt each other's."""
    return hashlib.sha256(str(Path(home).expanduser()).encode()).hexdigest()[:12]


def container_name(instance: str, replica_id: str) -> str:
    return f"cortexd-{instance}-{replica_id}"


bind_paths = replica_paths  # each mounted read-only at the same path


def project_mount(spec: APISpec) -> ProjectMount:
    """Whether the project is also bound at /mnt/project, where Cortex mounted it (project_mount.py)."""
    return docker_mount(bind_paths(spec), spec.project_dir)


def mounts(spec: APISpec) -> list[Any]:
    """The replica's bind mounts, read-only: its folders at their own paths, the project at
    /mnt/project too (unless a folder is in the way), and the volume of the runtime spec."""
    from docker.types import Mount

    binds = [Mount(target=p, source=p, type="bind", read_only=True) for p in bind_paths(spec)]
    if project_mount(spec).unavailable is None and os.path.normpath(spec.project_dir) != MOUNT_POINT:
        binds.append(Mount(target=MOUNT_POINT, source=spec.project_dir, type="bind", read_only=True))
    # the runtime spec, copied in before start (put_archive cannot write a read-only root)
    return binds + [Mount(target=SPEC_DIR, source=None, type="volume")]


def container_user(host_uid: int, host_gid: int) -> str:
    """The replica's user: the daemon's own uid:gid, or the image's unprivileged user for root.

    Running as the invoking user lets the container read a project in a private
    home directory (0750 on Ubuntu) exactly as its owner can; root is never
    passed through: a root daemon's replicas run as uid 10001.
    """
    return IMAGE_USER if host_uid == 0 else f"{host_uid}:{host_gid}"


def replica_environment(
    spec: APISpec, dotenv: Mapping[str, str] | None = None, user: str = IMAGE_USER,
    limits: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment: the API's `env` < `.env` (Cortex sourced it after `env`)
    < what the runtime needs (and the daemon's `limits`, DaemonSettings.replica_limits). HOME is a
    tmpfs (IMAGE_HOME) for the image's user; a host uid
    has no home in the image and gets /tmp, writable by every user."""
    env = {"HOME": IMAGE_HOME if user == IMAGE_USER else "/tmp"}
    env.update(layered_environment(spec.predictor.env, dotenv or {}, {}))
    paths = [spec.predictor.python_path, spec.project_dir]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(limits or {})
    return env


def container_create_args(
    spec: APISpec,
    replica_id: str,
    gpu_ids: tuple[int, ...],
    image: str,
    *,
    instance: str,
    dotenv: Mapping[str, str] | None = None,
    user: str = IMAGE_USER,
    container_port: int = CONTAINER_PORT,
    limits: Mapping[str, str] | None = None,
    tmpfs_bytes: int | None = None,
) -> dict[str, Any]:
    """docker-py `containers.create(**kwargs)` arguments for one replica (pure).

    user: container_user() of the daemon's uid/gid; dotenv: the project's .env.
    Hardening: unprivileged, no capabilities, read-only root filesystem (tmpfs /tmp and HOME,
    each bounded by tmpfs_size(spec, tmpfs_bytes); the spec on its own volume), a pids limit,
    and the cortexd network (no inter-container traffic). No memory limit unless compute.mem
    sets one (as in Cortex).
    """
    from docker.types import DeviceRequest, LogConfig

    labels = {
        LABEL_MANAGED: "true",
        LABEL_INSTANCE: instance,
        LABEL_API: spec.name,
        LABEL_REPLICA: replica_id,
        LABEL_SPEC_HASH: spec.spec_hash,
        LABEL_GPUS: ",".join(str(i) for i in gpu_ids),
    }
    args: dict[str, Any] = {
        "image": image,
        "name": container_name(instance, replica_id),
        # explicit, so a custom predictor.image's own entrypoint cannot get in the way
        "entrypoint": ["python", "-m", "predictor_runtime"],
        "command": ["--spec", SPEC_IN_CONTAINER, "--host", "0.0.0.0", "--port", str(container_port)],
        "environment": replica_environment(spec, dotenv, user, limits),
        "working_dir": spec.project_dir,
        "labels": labels,
        # loopback only, ephemeral host port (read back after start)
        "ports": {f"{container_port}/tcp": ("127.0.0.1", None)},
        "mounts": mounts(spec),
        "user": user,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "read_only": True,
        "tmpfs": tmpfs_mounts(user, tmpfs_size(spec, tmpfs_bytes)),
        "pids_limit": pids_limit(spec),
        "network": NETWORK,
        # tini as PID 1: forwards SIGTERM to the runtime and reaps its worker processes
        "init": True,
        "nano_cpus": round(spec.compute.cpu * 1e9),
        "log_config": LogConfig(type="json-file", config={"max-size": "20m", "max-file": "2"}),
        "stop_signal": "SIGTERM",
        "detach": True,
    }
    if spec.compute.mem:
        args["mem_limit"] = int(spec.compute.mem)
    if gpu_ids:
        args["device_requests"] = [
            DeviceRequest(driver="nvidia", device_ids=[str(i) for i in gpu_ids], capabilities=[["gpu"]])
        ]
    return args


def tmpfs_size(spec: APISpec, configured: int | None = None) -> int:
    """Bytes each of a replica's tmpfs mounts may hold: `configured` (CORTEXD_TMPFS_SIZE), else
    half of compute.mem (the kernel's default for a tmpfs, half of the RAM, taken of the replica's
    memory rather than the host's; what the mounts hold counts toward mem_limit too), else
    DEFAULT_TMPFS_BYTES."""
    if configured:
        return int(configured)
    if spec.compute.mem:
        return max(int(spec.compute.mem) // 2, 2**20)
    return DEFAULT_TMPFS_BYTES


def tmpfs_mounts(user: str, size: int = DEFAULT_TMPFS_BYTES) -> dict[str, str]:
    """The only writable places of a replica's container (memory-backed, gone with it): /tmp
    (the runtime's model disk cache, tempfile) and, for the image's user, its HOME (~/.cache);
    each holds at most `size` bytes (a write past it fails with ENOSPC, no memory is taken)."""
    mounts = {"/tmp": f"rw,nosuid,nodev,size={size},mode=1777"}
    if user == IMAGE_USER:
        uid, gid = IMAGE_USER.split(":")
        mounts[IMAGE_HOME] = f"rw,nosuid,nodev,size={size},uid={uid},gid={gid},mode=0700"
    return mounts


def pids_limit(spec: APISpec) -> int:
    """PIDS_LIMIT, or more when the predictor's processes x threads need it (threads count)."""
    p = spec.predictor
    return max(PIDS_LIMIT, p.processes_per_replica * (p.threads_per_process + 64) + 64)


def spec_archive(spec: APISpec | RuntimeSpec) -> bytes:
    """A tar holding the runtime spec (an API's, or a worker's own) as spec.json, for
    put_archive(SPEC_DIR) (pure)."""
    data = (spec.runtime_spec() if isinstance(spec, APISpec) else spec).dumps().encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        f = tarfile.TarInfo(posixpath.basename(SPEC_IN_CONTAINER))
        f.size, f.mode = len(data), 0o444
        tar.addfile(f, io.BytesIO(data))
    return buf.getvalue()


def unreadable_by_others(paths: list[str], predictor_file: str) -> str | None:
    """The first path the image's user (uid 10001, a stranger to the host's files) cannot reach,
    or None: without this check the replica would fail with a PermissionError deep in the runtime."""
    uid, gid = (int(x) for x in IMAGE_USER.split(":"))
    return unreadable_by(uid, (gid,), paths, [predictor_file])


def managed_filters(instance: str) -> dict[str, list[str]]:
    """docker-py `containers.list(filters=...)` for the replicas of the daemon labelled `instance`
    (its workers, which carry no replica label, are not replicas)."""
    return {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={instance}", LABEL_REPLICA]}


def worker_filters(instance: str) -> dict[str, list[str]]:
    """docker-py `containers.list(filters=...)` for the job workers of the daemon labelled `instance`."""
    return {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={instance}", LABEL_WORKER]}


def worker_create_args(spec: APISpec, launch: WorkerLaunch, image: str, **kwargs: Any) -> dict[str, Any]:
    """docker-py create() arguments for a job's worker (pure): a replica's container of the API
    (container_create_args: its image, user, limits, GPUs, hardening, network, labels but the
    replica's) that runs `python -m MODULE` on the runtime spec, publishes no port, and reaches
    the daemon through its unix socket for workers, bound in at WORKER_SOCKET."""
    from docker.types import Mount

    args = container_create_args(spec, launch.worker_id, launch.gpu_ids, image, **kwargs)
    labels = {k: v for k, v in args["labels"].items() if k != LABEL_REPLICA}
    env = {**args["environment"], **launch.env, "CORTEXD_JOB_URL": f"http://cortexd{launch.endpoint.path}",
           "CORTEXD_JOB_SOCKET": WORKER_SOCKET}
    args.pop("ports")
    return {**args, "entrypoint": ["python", "-m", launch.module], "command": ["--spec", SPEC_IN_CONTAINER],
            "labels": {**labels, LABEL_WORKER: launch.worker_id}, "environment": env,
            "mounts": [*args["mounts"], Mount(target=WORKER_SOCKET, source=launch.endpoint.socket, type="bind")]}
