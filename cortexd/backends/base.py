"""The ReplicaBackend protocol: the seam between the daemon and whatever runs replicas.

A backend starts and stops replicas and reports what runs; it keeps no state the
daemon relies on that cannot be re-read (replicas carry their spec hash, observed
state is always re-read: docs/architecture.md, "Rules the layers keep"). Two implementations:
backends/process.py (local child processes) and backends/docker.py (containers).
Tests of the reconciler use a recording fake of this protocol.

A backend also starts one-off workers of an API (a BatchAPI job's, daemon/jobs.py) through the
same launch as the API's replicas (user, cgroups or container, limits, environment or image,
GPUs, /mnt/project), with another command and no port: `start_worker`. Workers are not
replicas: list() never shows them, and `end_workers()` removes what a killed daemon left.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cortexd.spec.model import APISpec
from predictor_runtime.contract import RuntimeSpec

ReplicaState = Literal["starting", "running", "exited"]


@dataclass(frozen=True)
class ReplicaInfo:
    """What a backend observes about one replica (a value; re-read every time)."""

    api: str
    replica_id: str  # unique per backend, e.g. "iris-3f2a9c"
    spec_hash: str
    state: ReplicaState
    host: str  # where the replica's HTTP server listens (loopback)
    port: int
    started_at: float  # wall-clock seconds
    exit_code: int | None = None
    oom_killed: bool = False
    gpu_ids: tuple[int, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # a unix socket the replica also serves on, for the gateway (the process backend's: see
    # replica_files.gateway_socket); "" where the gateway uses host:port
    socket: str = ""


@dataclass(frozen=True)
class WorkerEndpoint:
    """Where a worker reaches the daemon's job endpoint: a loopback URL (process workers) or the
    daemon's unix socket for workers (bound into a worker's container: no port is opened to the
    bridge network), and the job's path on either."""

    url: str  # http://127.0.0.1:PORT/jobs/JOB
    socket: str  # the unix socket the same endpoint listens on (0600; a root daemon's: its
    path: str  # /jobs/JOB                               container user's)


@dataclass(frozen=True)
class WorkerLaunch:
    """A one-off worker of an API: `python -m MODULE --spec SPEC`, started as the API's replicas are."""

    worker_id: str  # unique per daemon (its container's name, its pid file), e.g. "job1f2e-worker-3"
    module: str  # e.g. "predictor_runtime.batch_worker"
    runtime_spec: RuntimeSpec  # the API's, predictor.config merged with the job's
    env: Mapping[str, str]  # what it is told besides a replica's environment (its job, its name)
    endpoint: WorkerEndpoint
    log_path: Path  # where its output goes (the daemon's file, outside any container)
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class WorkerExit:
    code: int
    oom_killed: bool = False  # killed for memory (Docker's OOMKilled, a root daemon's cgroup)


class Worker(Protocol):
    """A started worker: wait for its end, or stop it."""

    name: str
    pid: int | None  # the host pid of a process worker (None in a container)

    async def wait(self) -> WorkerExit:
        """Its exit, once it ended; what it held (private folder, cgroup, container) is gone then."""

    async def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns once it ended (wait() then answers)."""


class ReplicaBackend(Protocol):
    name: str
    # True when ensure_image() builds an image (Docker): the API then waits "preparing the
    # replica image"; the process backend prepares environments and says so in preparing()
    builds_images: bool

    def preparing(self, api: str) -> tuple[str, str | None] | None:
        """(phase, detail) of what the API's replicas wait for, e.g. ("installing requirements",
        "collecting six==1.16.0 (requirements.txt line 2)"); None when nothing is in progress."""

    def isolation(self, api: str) -> dict[str, Any] | None:
        """Who the API's replicas run as and which limits hold, for `cortexd get API`:
        {"runs_as": str, "isolated": bool, "notice": str | None, "limits": {name: str}}."""

    def replica_of_peer(self, pid: int, uid: int) -> str | None:
        """The replica a control-socket peer (SO_PEERCRED pid, uid) belongs to, else None."""

    def notices(self, spec: APISpec) -> list[str]:
        """What this backend does not do of `spec`, one sentence each (the daemon says them once per
        API): the process backend ignores predictor.image; Docker does every field."""

    async def collect_garbage(self, deployed: list[APISpec]) -> None:
        """At the daemon's start, beside serving: remove what was prepared for replicas that no
        deployed API uses (the process backend's cached environments; Docker leaves images)."""

    async def ensure_image(self, spec: APISpec) -> None:
        """Make sure whatever the replica needs exists (a no-op for processes)."""

    async def start(self, spec: APISpec, replica_id: str, gpu_ids: tuple[int, ...] = ()) -> ReplicaInfo:
        """Start one replica of `spec`; returns as soon as it is launched (not ready)."""

    async def start_worker(self, spec: APISpec, launch: WorkerLaunch) -> Worker:
        """Start a worker of `spec` as a replica of it would start (its user, cgroups or container,
        limits, environment or image, `launch.gpu_ids`); a BackendError when it cannot start."""

    async def end_workers(self) -> None:
        """Remove the workers a previous daemon on this home left running (its containers)."""

    async def stop(self, replica_id: str, timeout: float = 10.0) -> None:
        """Stop a replica gracefully (SIGTERM, then kill after `timeout`) and forget it."""

    async def list(self) -> list[ReplicaInfo]:
        """Every replica this backend owns, including exited ones not yet removed."""

    async def cpu_seconds(self, replica_ids: builtins.list[str]) -> dict[str, float]:
        """CPU time used so far by each running replica (for CPU-based autoscaling)."""

    async def logs(self, replica_id: str, tail: int | None = None) -> builtins.list[str]:
        """The replica's output lines (stdout and stderr together)."""

    def log_path(self, replica_id: str) -> str | None:
        """A file that holds the replica's output, where the backend keeps one."""

    async def settle(self) -> None:
        """Wait for replica starts in progress, so that a final list() sees every replica."""

    async def close(self) -> None:
        """Release resources (not the replicas: the daemon stops those first)."""
