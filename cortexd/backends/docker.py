"""The Docker backend: each replica is a container of a cortexd predictor image (docker-py).

Chosen with `--backend docker` (and by `--backend auto` when probe() finds an
engine). What runs is re-read from the engine every time: containers carry
the labels `cortexd.managed=true`, `cortexd.instance` (which daemon owns them),
`cortexd.api`, `cortexd.replica`, `cortexd.spec-hash` and `cortexd.gpus`, so
a restarted daemon finds its replicas through list() (DESIGN.md section 4).

The decisions are pure functions tested without an engine:
container_create_args() (spec -> docker-py create kwargs: mounts, limits,
GPUs, hardening) and replica_from_attrs() (inspect data -> ReplicaInfo). The
class around them does the I/O; docker-py blocks, so every call runs in a
thread, and its exceptions are translated once, in docker_errors().

Containers see the project directory (and model directories and python_path
outside it) read-only at the SAME absolute paths as on the host, so the
runtime spec needs no rewriting and tracebacks name the user's real files.
The runtime spec is copied into the created container (/etc/cortexd/spec.json)
before it starts, so no host file has to outlive the daemon or be readable
by the container's user. Ports are published on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import socket
import sys
import tarfile
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from cortexd.backends.base import ReplicaInfo, ReplicaState
from cortexd.backends.images import ImageBuilder, Progress, variant_of
from cortexd.backends.isolation import (  # parse_dotenv: re-exported for kube bundles
    layered_environment,
    parse_dotenv,  # noqa: F401
    read_dotenv,
    replica_paths,
    unreadable_by,
)
from cortexd.errors import BackendError, BackendUnavailable, CortexdError
from cortexd.logfiles import DEFAULT_FILES, DEFAULT_MAX_BYTES, RotatingLogWriter
from cortexd.spec.model import APISpec

log = logging.getLogger("cortexd.docker")

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
LABEL_MANAGED = "cortexd.managed"
LABEL_INSTANCE = "cortexd.instance"
LABEL_API = "cortexd.api"
LABEL_REPLICA = "cortexd.replica"
LABEL_SPEC_HASH = "cortexd.spec-hash"
LABEL_GPUS = "cortexd.gpus"

NVIDIA_REMEDY = (
    "Docker cannot give containers GPUs on this host (no NVIDIA runtime in the engine: {detail}). "
    "Install the NVIDIA Container Toolkit (package nvidia-container-toolkit), run "
    "`nvidia-ctk runtime configure --runtime=docker`, and restart dockerd; or set compute.gpu: 0."
)


def instance_for_home(home: Path | str) -> str:
    """The instance label of the daemon whose home is `home`: two daemons never adopt each other's."""
    return hashlib.sha256(str(Path(home).expanduser()).encode()).hexdigest()[:12]


def container_name(instance: str, replica_id: str) -> str:
    return f"cortexd-{instance}-{replica_id}"


# -- pure decisions -------------------------------------------------------------------------


bind_paths = replica_paths  # each mounted read-only at the same path


def container_user(host_uid: int, host_gid: int) -> str:
    """The replica's user: the daemon's own uid:gid, or the image's unprivileged user for root.

    Running as the invoking user lets the container read a project in a private
    home directory (0750 on Ubuntu) exactly as its owner can; root is never
    passed through: a root daemon's replicas run as uid 10001.
    """
    return IMAGE_USER if host_uid == 0 else f"{host_uid}:{host_gid}"


def published_note(info: ReplicaInfo) -> str:
    """The first line of a container's log: its port is its own; where the daemon reaches it."""
    return (f"[cortexd] replica {info.replica_id}: port {CONTAINER_PORT} below is the container's own; "
            f"cortexd reaches this replica at http://{info.host}:{info.port} (clients use the "
            "gateway's URL, `cortexd get`)\n")


def replica_environment(
    spec: APISpec, dotenv: Mapping[str, str] | None = None, user: str = IMAGE_USER,
    limits: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment: the API's `env` < `.env` (Cortex sourced it after `env`)
    < what the runtime needs (and the daemon's `limits`, DaemonSettings.replica_limits). HOME is a tmpfs (IMAGE_HOME) for the image's user; a host uid
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
) -> dict[str, Any]:
    """docker-py `containers.create(**kwargs)` arguments for one replica (pure).

    user: container_user() of the daemon's uid/gid; dotenv: the project's .env.
    Hardening: unprivileged, no capabilities, read-only root filesystem (tmpfs /tmp and HOME,
    the spec on its own volume), a pids limit, and the cortexd network (no inter-container
    traffic). No memory limit unless compute.mem sets one (as in Cortex).
    """
    from docker.types import DeviceRequest, LogConfig, Mount

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
        "mounts": [Mount(target=p, source=p, type="bind", read_only=True) for p in bind_paths(spec)]
        # the runtime spec, copied in before start (put_archive cannot write a read-only root)
        + [Mount(target=SPEC_DIR, source=None, type="volume")],
        "user": user,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
        "read_only": True,
        "tmpfs": tmpfs_mounts(user),
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


def tmpfs_mounts(user: str) -> dict[str, str]:
    """The only writable places of a replica's container (memory-backed, gone with it): /tmp
    (the runtime's model disk cache, tempfile) and, for the image's user, its HOME (~/.cache)."""
    mounts = {"/tmp": "rw,nosuid,nodev,mode=1777"}
    if user == IMAGE_USER:
        uid, gid = IMAGE_USER.split(":")
        mounts[IMAGE_HOME] = f"rw,nosuid,nodev,uid={uid},gid={gid},mode=0700"
    return mounts


def pids_limit(spec: APISpec) -> int:
    """PIDS_LIMIT, or more when the predictor's processes x threads need it (threads count)."""
    p = spec.predictor
    processes = int(getattr(p, "processes_per_replica", 1) or 1)
    threads = int(getattr(p, "threads_per_process", 1) or 1)
    return max(PIDS_LIMIT, processes * (threads + 64) + 64)


def spec_archive(spec: APISpec) -> bytes:
    """A tar holding the runtime spec as spec.json, for put_archive(SPEC_DIR) (pure)."""
    data = json.dumps(spec.runtime_spec(), indent=1).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        f = tarfile.TarInfo(posixpath.basename(SPEC_IN_CONTAINER))
        f.size, f.mode = len(data), 0o444
        tar.addfile(f, io.BytesIO(data))
    return buf.getvalue()


_STATES: dict[str, ReplicaState] = {
    "created": "starting",
    "restarting": "starting",
    "running": "running",
    "paused": "running",
    "exited": "exited",
    "dead": "exited",
    "removing": "exited",
}


def parse_docker_time(text: str | None) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z') -> epoch seconds; zero time -> None."""
    if not text or text.startswith("0001-01-01"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    tz = "+00:00"
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, off = frac.partition(sign)
            tz = sign + off
    try:
        base = datetime.fromisoformat(head + tz)
    except ValueError:
        return None
    digits = "".join(c for c in frac if c.isdigit())
    return base.timestamp() + (int(digits) / 10 ** len(digits) if digits else 0.0)


def published_port(attrs: Mapping[str, Any], container_port: int = CONTAINER_PORT) -> int | None:
    """The loopback host port Docker published for `container_port` (None when not running)."""
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(f"{container_port}/tcp") or []:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def network_address(attrs: Mapping[str, Any], network: str = NETWORK) -> str | None:
    """The container's IP address on the cortexd network (None when it is not on it or stopped)."""
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or None


def engine_reaches_containers(engine_info: Mapping[str, Any], platform: str) -> bool:
    """Whether this host can connect to containers' bridge addresses (pure, from `docker info`):
    a Linux engine on this host, neither rootless (its bridge lives in another network namespace)
    nor Docker Desktop (a VM)."""
    security = " ".join(engine_info.get("SecurityOptions") or [])
    return (platform.startswith("linux") and "rootless" not in security
            and "Docker Desktop" not in str(engine_info.get("OperatingSystem", "")))


def replica_from_attrs(attrs: Mapping[str, Any], container_port: int = CONTAINER_PORT,
                       direct: bool = False) -> ReplicaInfo:
    """What `docker inspect` says about one of our containers, as a ReplicaInfo (pure).

    direct: address a running replica at its IP on the cortexd network (the host reaches it with
    inter-container traffic off), so connecting to a dead container fails (refused, or no route
    after a few seconds once its address is gone): the request provably never reached it. Through
    the published loopback port docker-proxy accepts, then resets, and a failure looks like a
    request that was sent. Otherwise (or for a container not on that network) the published port.
    """
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    state = attrs.get("State") or {}
    status = _STATES.get(state.get("Status", ""), "exited")
    gpus = tuple(int(i) for i in (labels.get(LABEL_GPUS) or "").split(",") if i.strip().isdigit())
    started = parse_docker_time(state.get("StartedAt")) or parse_docker_time(attrs.get("Created")) or 0.0
    extra = {
        "container": str(attrs.get("Id", ""))[:12],
        "name": str(attrs.get("Name", "")).lstrip("/"),
        "image": str((attrs.get("Config") or {}).get("Image", "")),
    }
    if state.get("Error"):
        extra["error"] = str(state["Error"])
    host, port = "127.0.0.1", published_port(attrs, container_port) or 0
    address = network_address(attrs) if direct and status == "running" else None
    if address:
        host, port = address, container_port
    return ReplicaInfo(
        api=labels.get(LABEL_API, ""),
        replica_id=labels.get(LABEL_REPLICA, ""),
        spec_hash=labels.get(LABEL_SPEC_HASH, ""),
        state=status,
        host=host,
        port=port,
        started_at=started,
        exit_code=int(state.get("ExitCode", 0)) if status == "exited" else None,
        oom_killed=bool(state.get("OOMKilled", False)),
        gpu_ids=gpus,
        extra=extra,
    )


def unreadable_by_others(paths: list[str], predictor_file: str) -> str | None:
    """The first path the image's user (uid 10001, a stranger to the host's files) cannot reach,
    or None: without this check the replica would fail with a PermissionError deep in the runtime."""
    uid, gid = (int(x) for x in IMAGE_USER.split(":"))
    return unreadable_by(uid, (gid,), paths, [predictor_file])


# -- error translation (the one place docker-py exceptions become ours) ------------------------------


def engine_address(base_url: str | None = None) -> str:
    return base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def unix_socket_problem(base_url: str | None, timeout: float = 3.0) -> str | None:
    """Why the engine's unix socket does not accept a connection (None if it does, or not unix).

    Checked before docker-py connects: on a missing or dead socket docker-py
    leaks the socket object it opened, and the error it raises says less.
    """
    address = engine_address(base_url)
    if not address.startswith(("unix://", "/")):
        return None
    path = address.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            return f"{e.strerror or e}: {path}"
    return None


def unavailable(base_url: str | None, detail: str) -> BackendUnavailable:
    address = engine_address(base_url)
    if "Permission denied" in detail or "PermissionError" in detail:
        return BackendUnavailable(
            f"Couldn't connect to the Docker engine at {address}: permission denied. Add your user to "
            "the `docker` group (then log in again), or use --backend process."
        )
    return BackendUnavailable(
        f"Couldn't connect to the Docker engine at {address}. Is it running? Start it with `dockerd` "
        f"(or `systemctl start docker`), or use --backend process. ({detail})"
    )


def translate(error: Exception, action: str, base_url: str | None = None) -> CortexdError:
    """docker-py / requests exception -> the CortexdError a user reads."""
    import docker.errors
    import requests.exceptions

    if isinstance(error, CortexdError):
        return error
    if isinstance(error, requests.exceptions.ConnectionError | FileNotFoundError | ConnectionError):
        return unavailable(base_url, str(error))
    if isinstance(error, docker.errors.APIError):
        detail = str(error.explanation or error)
        if "could not select device driver" in detail:
            return BackendError(f"{action}: " + NVIDIA_REMEDY.format(detail=detail))
        return BackendError(f"{action}: {detail}")
    if isinstance(error, docker.errors.DockerException):
        text = str(error)
        if "Error while fetching server API version" in text or "Connection" in text:
            return unavailable(base_url, text)
        return BackendError(f"{action}: {text}")
    if isinstance(error, requests.exceptions.RequestException):
        return BackendError(f"{action}: the Docker engine did not answer ({error})")
    raise error


@contextlib.contextmanager
def docker_errors(action: str, base_url: str | None = None) -> Iterator[None]:
    import docker.errors
    import requests.exceptions

    try:
        yield
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
        raise translate(e, action, base_url) from e


# -- the backend (I/O) -------------------------------------------------------------------------------


class DockerBackend:
    """ReplicaBackend running replicas as containers on the local Docker engine.

    instance: this daemon's label value (instance_for_home(settings.home));
    base_image: predictor images' base (else env CORTEXD_BASE_IMAGE, else
    python:3.11-slim, else the offline base if only that is present);
    progress: receives build output lines, always called on the event loop;
    log_dir: where each replica's output is copied (log_dir/<api>/<replica>.log),
    so logs outlive the container (a crashed replica's traceback stays
    readable) and are followed like the process backend's, rotated by size
    (log_max_bytes x log_files, cortexd/logfiles.py). One thread per running
    container copies its log stream; it ends when the container does.
    """

    name = "docker"

    def __init__(
        self,
        *,
        instance: str,
        base_image: str | None = None,
        progress: Progress | None = None,
        base_url: str | None = None,
        client: Any = None,
        log_dir: Path | str | None = None,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_files: int = DEFAULT_FILES,
        limits: Mapping[str, str] | None = None,
    ):
        self.instance = instance
        self._limits = dict(limits or {})  # DaemonSettings.replica_limits(), into every container
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._log_rotation = (log_max_bytes, log_files)
        self._pumps: dict[str, threading.Thread] = {}
        self._pumps_lock = threading.Lock()
        self._starting: set[asyncio.Task] = set()  # container starts in progress (settle())
        self._replica_api: dict[str, str] = {}  # replica id -> api, for log_path()
        self._base_image = base_image
        self._progress = progress
        self._base_url = base_url
        self._client_obj = client
        self._builder: ImageBuilder | None = None
        self._build_locks: dict[object, asyncio.Lock] = {}
        # spec hash -> the image tag image_for() returned: start() needs no build lock for these
        self._images: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._network_ready = False
        self._direct: bool | None = None  # engine_reaches_containers(), asked once

    # -- engine -----------------------------------------------------------------------------------
    @staticmethod
    def probe(base_url: str | None = None, timeout: float = 3.0) -> str | None:
        """None when an engine answers here; else why not (for `--backend auto`). Blocking, quick."""
        import docker

        problem = unix_socket_problem(base_url, timeout)
        if problem:
            return str(unavailable(base_url, problem))
        try:
            with docker_errors("probing the Docker engine", base_url):
                client = (
                    docker.DockerClient(base_url=base_url, timeout=timeout)
                    if base_url
                    else docker.from_env(timeout=int(max(1, timeout)))
                )
                try:
                    client.ping()
                finally:
                    client.close()
        except CortexdError as e:
            return str(e)
        return None

    def _client(self) -> Any:
        if self._client_obj is None:
            import docker

            problem = unix_socket_problem(self._base_url)
            if problem:
                raise unavailable(self._base_url, problem)
            with docker_errors("connecting to the Docker engine", self._base_url):
                self._client_obj = (
                    docker.DockerClient(base_url=self._base_url) if self._base_url else docker.from_env()
                )
        return self._client_obj

    async def _call(self, action: str, fn: Any, *args: Any) -> Any:
        def run() -> Any:
            with docker_errors(action, self._base_url):
                return fn(*args)

        return await asyncio.to_thread(run)

    async def _call_detached(self, action: str, fn: Any) -> Any:
        """_call on a daemon thread: for image builds, which can take minutes. The default
        executor is joined when the event loop closes, so a build running there would keep a
        daemon that was told to stop alive until the build ends."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        def run() -> None:
            try:
                with docker_errors(action, self._base_url):
                    result = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                outcome = (False, e)
            else:
                outcome = (True, result)
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(deliver, *outcome)

        threading.Thread(target=run, name=f"build-{action[:40]}", daemon=True).start()
        return await fut

    async def _reaches_containers(self) -> bool:
        """Whether replicas are addressed at their cortexd-network IP (replica_from_attrs)."""
        if self._direct is None:
            info = await self._call("reading the Docker engine's info", lambda: self._client().info())
            local = engine_address(self._base_url).startswith(("unix://", "/"))
            self._direct = local and engine_reaches_containers(info, sys.platform)
        return self._direct

    async def _ensure_network(self) -> None:
        """Create the cortexd network (a bridge without inter-container traffic) once; an existing
        one that lets containers talk to each other is refused with the fix."""
        if self._network_ready:
            return
        import docker.errors

        def run() -> None:
            client = self._client()
            try:
                network = client.networks.get(NETWORK)
            except docker.errors.NotFound:
                try:
                    client.networks.create(NETWORK, driver="bridge", options=NETWORK_OPTIONS,
                                           labels={LABEL_MANAGED: "true"})
                    return
                except docker.errors.APIError as e:
                    if e.status_code != 409:  # 409: another daemon created it meanwhile
                        raise
                network = client.networks.get(NETWORK)
            options = network.attrs.get("Options") or {}
            if network.attrs.get("Driver") != "bridge" or any(
                    options.get(k) != v for k, v in NETWORK_OPTIONS.items()):
                raise BackendError(
                    f"the Docker network {NETWORK!r} exists but lets containers reach each other "
                    f"(driver {network.attrs.get('Driver')}, options {options}); cortexd's replicas "
                    f"need a bridge with enable_icc false. Remove it (`docker network rm {NETWORK}`) "
                    "and cortexd creates its own.")

        await self._call(f"preparing the Docker network {NETWORK!r}", run)
        self._network_ready = True

    async def _start_call(self, action: str, fn: Any, *args: Any) -> Any:
        """A container start that finishes even if the awaiting task is cancelled, so settle()
        can wait for it and the daemon's final list() sees the container (and stops it)."""
        task = asyncio.ensure_future(self._call(action, fn, *args))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)
        return await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait for container starts in progress (the daemon calls this before its last list())."""
        if self._starting:
            await asyncio.gather(*list(self._starting), return_exceptions=True)

    # -- images -----------------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        # called on the building thread; the daemon's callback runs on its loop
        if self._progress is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._progress, line)

    def _get_builder(self) -> ImageBuilder:
        if self._builder is None:
            self._builder = ImageBuilder(self._client(), self._base_image, self._emit)
        return self._builder

    async def image_for(self, spec: APISpec) -> str:
        """The image a replica of `spec` runs on, building what is missing.

        Builds of the same predictor image wait for each other (the second then
        finds the image built); APIs on different images build in parallel.
        """
        self._loop = asyncio.get_running_loop()
        key = spec.predictor.image or variant_of(spec)
        async with self._build_locks.setdefault(key, asyncio.Lock()):
            tag = await self._call_detached(
                f"preparing the image of api {spec.name!r}",
                lambda: self._get_builder().ensure(spec),
            )
        self._images[spec.spec_hash] = tag
        return tag

    async def _image_to_start(self, spec: APISpec) -> str:
        """The image of `spec`, without waiting on a build lock when it is already known.

        Another API's long build holds the variant's lock; a replica of an API whose
        image is known (ensure_image ran, or an earlier start) starts meanwhile.
        """
        return self._images.get(spec.spec_hash) or await self.image_for(spec)

    async def ensure_image(self, spec: APISpec) -> None:
        await self.image_for(spec)

    # -- replicas ---------------------------------------------------------------------------------
    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        import docker.errors

        known = spec.spec_hash in self._images
        image = await self._image_to_start(spec)
        dotenv = read_dotenv(spec.project_dir, spec.name)
        await self._ensure_network()
        user = container_user(os.getuid(), os.getgid())
        if user == IMAGE_USER:
            blocked = unreadable_by_others(bind_paths(spec), spec.predictor.path)
            if blocked:
                raise BackendError(
                    f"api {spec.name!r}: the replica's container runs as uid 10001 (cortexd runs as "
                    f"root) and cannot read {blocked}. Make the project readable "
                    f"(`chmod o+rX` on it and o+x on its parent folders), or run cortexd as a "
                    "non-root user in the docker group (replicas then run as that user)."
                )
        archive = spec_archive(spec)

        def run(image: str) -> dict[str, Any]:
            kwargs = container_create_args(
                spec, replica_id, tuple(gpu_ids), image, instance=self.instance, dotenv=dotenv, user=user,
                limits=self._limits,
            )
            client = self._client()
            container = client.containers.create(**kwargs)
            try:
                container.put_archive(SPEC_DIR, archive)
                container.start()
                container.reload()
            except BaseException:
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)  # v: its spec volume too
                raise
            return container.attrs

        action = f"starting a replica of api {spec.name!r}"
        try:
            attrs = await self._start_call(action, run, image)
        except CortexdError as e:
            if not (known and isinstance(e.__cause__, docker.errors.ImageNotFound)):
                raise
            # the remembered image was removed since (docker rmi, prune): prepare it again
            self._images.pop(spec.spec_hash, None)
            attrs = await self._start_call(action, run, await self.image_for(spec))
        info = replica_from_attrs(attrs, direct=await self._reaches_containers())
        self._ensure_pump(info, attrs.get("Id", ""))
        return info

    # -- logs: copied from the engine into files ------------------------------------------------
    def _log_file(self, api: str, replica_id: str) -> Path | None:
        if self._log_dir is None:
            return None
        return self._log_dir / api / f"{replica_id}.log"

    def _ensure_pump(self, info: ReplicaInfo, container_id: str) -> None:
        self._replica_api[info.replica_id] = info.api
        path = self._log_file(info.api, info.replica_id)
        if path is None or info.state == "exited" or not container_id:
            return
        with self._pumps_lock:
            pump = self._pumps.get(info.replica_id)
            if pump is not None and pump.is_alive():
                return
            pump = threading.Thread(target=self._pump, args=(container_id, path, info),
                                    name=f"logs-{info.replica_id}", daemon=True)
            self._pumps[info.replica_id] = pump
            pump.start()

    def _pump(self, container_id: str, path: Path, info: ReplicaInfo | None = None) -> None:
        """Append the container's output to `path` until the container ends (own client).

        A new log opens with where the daemon reaches the container: the runtime inside says
        `serving on http://0.0.0.0:8888`, an address that is the container's own, not the host's
        (where 8888 is the gateway's)."""
        import docker

        path.parent.mkdir(parents=True, exist_ok=True)
        # an adopted replica's file already holds its output up to the file's mtime
        since = path.stat().st_mtime if path.exists() and path.stat().st_size else None
        try:
            client = docker.DockerClient(base_url=self._base_url) if self._base_url else docker.from_env()
        except Exception:  # noqa: BLE001 - no engine: list()/start() report that
            return
        try:
            container = client.containers.get(container_id)
            kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True, "follow": True}
            if since is not None:
                kwargs["since"] = since
            out = RotatingLogWriter(path, *self._log_rotation)  # at most size x files on disk
            try:
                if since is None and info is not None and info.port:
                    out.write(published_note(info).encode())
                for chunk in container.logs(**kwargs):
                    out.write(chunk)
            finally:
                out.close()
        except Exception as e:  # noqa: BLE001 - removed container, engine gone: the copy just ends
            log.debug("log copy of %s ended: %s", container_id[:12], e)
        finally:
            client.close()

    def _find(self, replica_id: str) -> Any | None:
        import docker.errors

        try:
            return self._client().containers.get(container_name(self.instance, replica_id))
        except docker.errors.NotFound:
            return None

    async def stop(self, replica_id: str, timeout: float = 10.0) -> None:
        import docker.errors

        def run() -> None:
            container = self._find(replica_id)
            if container is None:
                return
            with contextlib.suppress(docker.errors.NotFound):
                if container.status in ("running", "restarting", "paused"):
                    container.stop(timeout=max(0, round(timeout)))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: its spec volume too

        await self._call(f"stopping replica {replica_id}", run)
        self._forget(replica_id)

    def _forget(self, replica_id: str) -> None:
        """Drop the bookkeeping of a replica that is gone (its log copy ends with its container)."""
        self._replica_api.pop(replica_id, None)
        with self._pumps_lock:
            self._pumps.pop(replica_id, None)

    def _prune(self, listed: set[str]) -> None:
        """Forget replicas the engine no longer lists (removed outside cortexd) whose log copy
        ended; a live copy means a container that start() created after the listing was read."""
        with self._pumps_lock:
            gone = [rid for rid in set(self._replica_api) | set(self._pumps) if rid not in listed
                    and not (rid in self._pumps and self._pumps[rid].is_alive())]
        for rid in gone:
            self._forget(rid)

    async def list(self) -> list[ReplicaInfo]:
        filters = {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={self.instance}"]}

        def run() -> list[dict[str, Any]]:
            found = self._client().containers.list(all=True, filters=filters, ignore_removed=True)
            return [c.attrs for c in found]

        attrs = await self._call("listing replicas", run)
        direct = await self._reaches_containers()
        infos = [replica_from_attrs(a, direct=direct) for a in attrs]
        for info, a in zip(infos, attrs):
            self._ensure_pump(info, a.get("Id", ""))  # adopted replicas (daemon restart)
        self._prune({info.replica_id for info in infos})
        return infos

    async def cpu_seconds(self, replica_ids: list[str]) -> dict[str, float]:
        """CPU time (seconds) each replica's container used so far (cgroup usage, one-shot stats)."""

        def one(replica_id: str) -> float | None:
            container = self._find(replica_id)
            if container is None or container.status != "running":
                return None
            stats = container.stats(stream=False, one_shot=True)
            usage = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
            return usage / 1e9 if usage is not None else None

        async def safe(replica_id: str) -> float | None:
            try:
                return await self._call(f"reading the CPU use of replica {replica_id}", one, replica_id)
            except CortexdError:
                return None

        values = await asyncio.gather(*(safe(r) for r in replica_ids))
        return {r: v for r, v in zip(replica_ids, values) if v is not None}

    async def logs(self, replica_id: str, tail: int | None = None) -> list[str]:
        def run() -> bytes:
            container = self._find(replica_id)
            if container is None:
                return b""
            return container.logs(stdout=True, stderr=True, tail="all" if tail is None else tail)

        data = await self._call(f"reading the logs of replica {replica_id}", run)
        return data.decode("utf-8", "replace").splitlines()

    def log_path(self, replica_id: str) -> str | None:
        if self._log_dir is None:
            return None  # the engine keeps the logs; read them with logs()
        api = self._replica_api.get(replica_id)
        path = self._log_file(api, replica_id) if api else None
        return str(path) if path is not None else None

    async def close(self) -> None:
        if self._client_obj is not None:
            client, self._client_obj = self._client_obj, None
            await asyncio.to_thread(client.close)
