"""The Docker backend: each replica is a container of a cortexd predictor image.

Chosen with `--backend docker` (and by `--backend auto` when probe() finds an
engine). What runs is re-read from the engine every time: containers carry
labels (which daemon owns them, api, replica, spec hash, GPUs), so a restarted
daemon finds its replicas through list(): what runs is re-read, never remembered
(docs/architecture.md, "Rules the layers keep").

DockerBackend is the I/O shell around pure decisions and one engine seam:
  container_args.py   spec -> docker-py create() arguments (mounts, limits, GPUs, hardening), labels
  container_state.py  inspect data -> ReplicaInfo
  docker_engine.py    DockerEngine, the docker-py calls, and docker_errors(), where their errors
                      become CortexdErrors once
  container_logs.py   each container's output copied into a rotated log file
  images.py           the predictor images (built on first use; their docker-py calls in image_calls.py)
docker-py blocks, so every engine call runs in a thread: container work in the
default executor, image builds (minutes) on daemon threads of their own.

The runtime spec is copied into the created container (/etc/cortexd/spec.json)
before it starts, so no host file has to outlive the daemon or be readable
by the container's user.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cortexd.backends.base import ReplicaInfo, Worker, WorkerExit, WorkerLaunch
from cortexd.backends.container_args import (
    IMAGE_USER,
    LABEL_MANAGED,
    NETWORK,
    NETWORK_OPTIONS,
    SPEC_DIR,
    bind_paths,
    container_create_args,
    container_name,
    container_user,
    managed_filters,
    pids_limit,
    project_mount,
    spec_archive,
    tmpfs_size,
    unreadable_by_others,
    worker_create_args,
    worker_filters,
)
from cortexd.backends.container_logs import ContainerLogCopier
from cortexd.backends.container_state import (
    engine_reaches_containers,
    replica_from_attrs,
)
from cortexd.backends.docker_engine import (
    DockerEngine,
    docker_errors,
    image_missing,
    probe,
)
from cortexd.backends.image_plans import variant_of
from cortexd.backends.images import ImageBuilder, Progress
from cortexd.backends.isolation import read_dotenv
from cortexd.errors import BackendError, CortexdError
from cortexd.logfiles import DEFAULT_FILES, DEFAULT_MAX_BYTES
from cortexd.spec.model import APISpec


class ContainerWorker:
    """A worker's container (DockerBackend.start_worker): its end, its output, its removal."""

    pid: int | None = None  # in a pid namespace of its own

    def __init__(self, name: str, backend: DockerBackend, container_id: str, copy: threading.Thread):
        self.name = name
        self._backend = backend
        self._id = container_id
        self._copy = copy
        self._exit: asyncio.Future[WorkerExit] | None = None

    async def wait(self) -> WorkerExit:
        if self._exit is None:
            self._exit = asyncio.ensure_future(self._ended())
        return await asyncio.shield(self._exit)

    async def _ended(self) -> WorkerExit:
        try:
            code, oom = await self._backend._wait_worker(self._id)
        except CortexdError:
            code, oom = -1, False  # the engine went away: the worker is lost
        await asyncio.to_thread(self._copy.join, 2.0)  # its last words, in its log
        with contextlib.suppress(CortexdError):
            await self._backend._call("removing a worker", self._backend._engine.remove_container, self._id, 0)
        return WorkerExit(code, oom)

    async def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(CortexdError):
            await self._backend._call(f"stopping worker {self.name}", self._backend._engine.remove_container,
                                      self._id, timeout)
        await self.wait()


class DockerBackend:
    """ReplicaBackend running replicas as containers on the local Docker engine.

    instance: this daemon's label value (container_args.instance_for_home(settings.home));
    base_image: predictor images' base (else env CORTEXD_BASE_IMAGE, else
    python:3.11-slim, else the offline base if only that is present);
    progress: receives build output lines, always called on the event loop;
    notify(message, api): notices about an API's dependencies (pre-installed packages
    added...), on the event loop, as the process backend's environments give them;
    engine: the DockerEngine to use (else one for base_url; tests pass a fake);
    log_dir: where each replica's output is copied (log_dir/<api>/<replica>.log,
    container_logs.py), rotated by size (log_max_bytes x log_files);
    limits: DaemonSettings.replica_limits(), into every container's environment.
    """

    name = "docker"
    builds_images = True

    def __init__(
        self,
        *,
        instance: str,
        base_image: str | None = None,
        progress: Progress | None = None,
        notify: Callable[[str, str], None] | None = None,
        base_url: str | None = None,
        engine: DockerEngine | None = None,
        log_dir: Path | str | None = None,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        log_files: int = DEFAULT_FILES,
        limits: Mapping[str, str] | None = None,
        tmpfs_bytes: int | None = None,
    ):
        self.instance = instance
        self._limits = dict(limits or {})
        self._tmpfs_bytes = tmpfs_bytes  # None: container_args.tmpfs_size()'s default
        self._engine = engine if engine is not None else DockerEngine(base_url)
        self._logs = ContainerLogCopier(self._engine, log_dir, log_max_bytes, log_files)
        self._starting: set[asyncio.Task] = set()  # container starts in progress (settle())
        self._base_image = base_image
        self._progress = progress
        self._notify = notify
        self._builder: ImageBuilder | None = None
        self._build_locks: dict[object, asyncio.Lock] = {}
        # spec hash -> the image tag image_for() returned: start() needs no build lock for these
        self._images: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._network_ready = False
        self._direct: bool | None = None  # engine_reaches_containers(), asked once
        self._started_specs: dict[str, APISpec] = {}  # api -> the spec last started (isolation())

    def preparing(self, api: str) -> tuple[str, str | None] | None:
        return None  # the reconciler says "preparing the replica image" (builds_images)

    async def collect_garbage(self, deployed: list[APISpec]) -> None:
        """Nothing: images no API uses any more are the engine's to prune (`docker image prune`)."""

    def notices(self, spec: APISpec) -> list[str]:
        """Every field of a spec has its effect on Docker, but nearest pins (the process backend's);
        /mnt/project is left out only when one of the API's folders is in its way
        (project_mount.in_the_way)."""
        said = []
        if spec.nearest_pins:
            said.append(f"api {spec.name!r}: nearest pins are not used on the Docker backend: the image "
                        "installs requirements.txt as written (the process backend, `--backend process`, "
                        "installs the nearest release of each pin that cannot be installed on its Python)")
        why = project_mount(spec).unavailable
        if why is not None:
            said.append(f"{spec.source_file}:{spec.source_line}: api {spec.name!r}: the project is not "
                        f"mounted at /mnt/project (where Cortex mounted it): {why}")
        return said

    def isolation(self, api: str) -> dict[str, Any] | None:
        """Every replica is a container of its own (container_args.container_args: its user,
        read-only root, no capabilities, its limits)."""
        spec = self._started_specs.get(api)
        if spec is None:
            return None
        user = container_user(os.getuid(), os.getgid())
        memory = (f"{int(spec.compute.mem)} bytes (Docker)" if spec.compute.mem
                  else "not limited (compute.mem is not set)")
        return {"runs_as": f"uid {user.split(':')[0]} in a container of its own", "isolated": True,
                "notice": None, "limits": {"memory": memory,
                                           "pids": f"{pids_limit(spec)} processes and threads (Docker)",
                                           "cpu": f"{spec.compute.cpu:g} CPUs (Docker)",
                                           "disk": f"/tmp and HOME: {tmpfs_size(spec, self._tmpfs_bytes)} "
                                                   "bytes each (tmpfs, in memory; CORTEXD_TMPFS_SIZE)"},
                **project_mount(spec).describe()}

    def replica_of_peer(self, pid: int, uid: int) -> str | None:
        return None  # a container's processes are in their own pid namespace, not this host's

    # -- engine -----------------------------------------------------------------------------------
    @staticmethod
    def probe(base_url: str | None = None, timeout: float = 3.0) -> str | None:
        """None when an engine answers here; else why not (for `--backend auto`). Blocking, quick."""
        return probe(base_url, timeout)

    async def _call(self, action: str, fn: Any, *args: Any) -> Any:
        def run() -> Any:
            with docker_errors(action, self._engine.base_url):
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
                with docker_errors(action, self._engine.base_url):
                    result = fn()
            except BaseException as e:
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
            info = await self._call("reading the Docker engine's info", self._engine.info)
            self._direct = self._engine.local and engine_reaches_containers(info, sys.platform)
        return self._direct

    async def _ensure_network(self) -> None:
        """Create the cortexd network (a bridge without inter-container traffic) once; an existing
        one that lets containers talk to each other is refused with the fix."""
        if self._network_ready:
            return
        engine = self._engine

        def run() -> None:
            attrs = engine.network_attrs(NETWORK)
            if attrs is None:
                if engine.create_network(NETWORK, NETWORK_OPTIONS, {LABEL_MANAGED: "true"}):
                    return
                attrs = engine.network_attrs(NETWORK) or {}  # another daemon created it meanwhile
            options = attrs.get("Options") or {}
            if attrs.get("Driver") != "bridge" or any(options.get(k) != v for k, v in NETWORK_OPTIONS.items()):
                raise BackendError(
                    f"the Docker network {NETWORK!r} exists but lets containers reach each other "
                    f"(driver {attrs.get('Driver')}, options {options}); cortexd's replicas "
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

    def _emit_notice(self, message: str, api: str) -> None:
        if self._notify is None:
            self._emit(f"notice: {message} (api {api!r})")
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._notify, message, api)

    def _get_builder(self) -> ImageBuilder:
        if self._builder is None:
            self._builder = self._engine.image_builder(self._base_image, self._emit, notify=self._emit_notice)
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
    async def _prepare_start(self, spec: APISpec) -> tuple[str, dict[str, str], str]:
        """(image, the project's .env, the container user) of a replica or worker of `spec`; a
        BackendError when the container's user could not read the project."""
        self._started_specs[spec.name] = spec
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
        return image, dotenv, user

    async def _run(self, spec: APISpec, action: str, image: str, create: Callable[[str], Mapping[str, Any]],
                   known: bool) -> Mapping[str, Any]:
        """create(image) started; a remembered image that was removed since (docker rmi, prune) is
        prepared again, once."""
        try:
            return await self._start_call(action, create, image)
        except CortexdError as e:
            if not (known and image_missing(e.__cause__)):
                raise
            self._images.pop(spec.spec_hash, None)
            return await self._start_call(action, create, await self.image_for(spec))

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        known = spec.spec_hash in self._images
        image, dotenv, user = await self._prepare_start(spec)
        archive = spec_archive(spec)

        def run(image: str) -> Mapping[str, Any]:
            kwargs = container_create_args(
                spec, replica_id, tuple(gpu_ids), image, instance=self.instance, dotenv=dotenv, user=user,
                limits=self._limits, tmpfs_bytes=self._tmpfs_bytes,
            )
            return self._engine.run_container(kwargs, SPEC_DIR, archive)

        attrs = await self._run(spec, f"starting a replica of api {spec.name!r}", image, run, known)
        info = replica_from_attrs(attrs, direct=await self._reaches_containers())
        self._logs.ensure(info, attrs.get("Id", ""))
        return info

    async def start_worker(self, spec: APISpec, launch: WorkerLaunch) -> Worker:
        """A worker of `spec` in a container of the API's image, as its replicas are (user, limits,
        GPUs, hardening, the cortexd network), with the daemon's unix socket for workers bound in
        (container_args.worker_create_args); its output copied into launch.log_path."""
        known = spec.spec_hash in self._images
        image, dotenv, user = await self._prepare_start(spec)
        if user == IMAGE_USER:  # the socket is the container user's alone (the daemon's home is 0700)
            uid, gid = (int(x) for x in IMAGE_USER.split(":"))
            await asyncio.to_thread(os.chown, launch.endpoint.socket, uid, gid)
        archive = spec_archive(launch.runtime_spec)

        def run(image: str) -> Mapping[str, Any]:
            kwargs = worker_create_args(spec, launch, image, instance=self.instance, dotenv=dotenv, user=user,
                                        limits=self._limits, tmpfs_bytes=self._tmpfs_bytes)
            return self._engine.run_container(kwargs, SPEC_DIR, archive)

        attrs = await self._run(spec, f"starting a worker of api {spec.name!r}", image, run, known)
        copy = self._logs.follow(attrs.get("Id", ""), launch.log_path)
        return ContainerWorker(launch.worker_id, self, attrs.get("Id", ""), copy)

    async def end_workers(self) -> None:
        """Remove the worker containers of this daemon's instance (a killed daemon's)."""
        found = await self._call("listing workers", self._engine.list_containers, worker_filters(self.instance))
        for attrs in found:
            await self._call("removing a worker", self._engine.remove_container, attrs.get("Name", "").lstrip("/"),
                             0)

    async def _wait_worker(self, container_id: str) -> tuple[int, bool]:
        return await self._call_detached("waiting for a worker", lambda: self._engine.wait_container(container_id))

    async def stop(self, replica_id: str, timeout: float = 10.0) -> None:
        await self._call(f"stopping replica {replica_id}", self._engine.remove_container,
                         container_name(self.instance, replica_id), timeout)
        self._logs.forget(replica_id)

    async def list(self) -> list[ReplicaInfo]:
        attrs = await self._call("listing replicas", self._engine.list_containers, managed_filters(self.instance))
        direct = await self._reaches_containers()
        infos = [replica_from_attrs(a, direct=direct) for a in attrs]
        for info, a in zip(infos, attrs):
            self._logs.ensure(info, a.get("Id", ""))  # adopted replicas (daemon restart)
        self._logs.prune({info.replica_id for info in infos})
        return infos

    async def cpu_seconds(self, replica_ids: builtins.list[str]) -> dict[str, float]:
        """CPU time (seconds) each replica's container used so far (cgroup usage, one-shot stats)."""

        async def safe(replica_id: str) -> float | None:
            try:
                return await self._call(f"reading the CPU use of replica {replica_id}", self._engine.cpu_seconds,
                                        container_name(self.instance, replica_id))
            except CortexdError:
                return None

        values = await asyncio.gather(*(safe(r) for r in replica_ids))
        return {r: v for r, v in zip(replica_ids, values) if v is not None}

    async def logs(self, replica_id: str, tail: int | None = None) -> builtins.list[str]:
        data = await self._call(f"reading the logs of replica {replica_id}", self._engine.container_logs,
                                container_name(self.instance, replica_id), tail)
        return data.decode("utf-8", "replace").splitlines()

    def log_path(self, replica_id: str) -> str | None:
        """The file a replica's output is copied to; None without log_dir (read logs() instead)."""
        return self._logs.log_path(replica_id)

    async def close(self) -> None:
        await asyncio.to_thread(self._engine.close)
