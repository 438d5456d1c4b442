"""What each part of the daemon needs from the others, as Protocols (typing.Protocol).

The daemon (running.py) wires the real parts; tests fake them at these seams with
recording fakes that implement a whole Protocol, so no part probes another with
hasattr/getattr:

- the reconciler drives the gateway through `ReplicaRouter` and asks `GPUPlacement`
  (daemon/gpu_placer.py) for GPUs; the backend seam is backends/base.py's
  `ReplicaBackend`;
- the autoscaler (daemon/autoscaler.py) reads and sets replica counts through
  `ScalingTarget` (the reconciler) and reads in-flight counts through `InFlight`
  (the gateway), instead of the reconciler's records and backend;
- the control API (daemon/control.py) serves a `ControlledDaemon`, never its
  reconciler, gateway or backend;
- the job runner (daemon/jobs.py) places its workers' GPUs through `WorkerGPUs`;
- the status snapshot reads what the process backend's environments installed other than
  requirements.txt says (nearest pins) through `PinChanges`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cortexd.backends.base import ReplicaInfo
    from cortexd.core.api_status import Failure
    from cortexd.core.placement import Placement
    from cortexd.daemon.events import EventLog
    from cortexd.gateway.metrics import APIMetrics, Monitor
    from cortexd.gateway.routes import ReplicaAddress, RouteConfig, SplitConfig
    from cortexd.spec.model import APISpec
    from cortexd.status import Status


class CountedRoute(Protocol):
    def counters_snapshot(self) -> dict[str, Any]:
        """The API's request counters for status views (cortexd/gateway/routes.py)."""


class InFlight(Protocol):
    def api_in_flight(self, api: str) -> int:
        """Requests of `api` in progress at the gateway."""


class ReplicaRouter(InFlight, Protocol):
    """The gateway, as the reconciler drives it (cortexd/gateway/proxy.py Gateway)."""

    async def configure(self, routes: Sequence[RouteConfig], splitters: Sequence[SplitConfig] = ()) -> None:
        """Serve exactly these APIs and traffic splitters (listeners per local_port, routes per endpoint)."""

    def set_replicas(self, api: str, replicas: Sequence[ReplicaAddress]) -> None:
        """The replicas that take `api`'s requests now, and where the gateway reaches them."""

    def set_state(self, api: str, *, starting: bool, failure: Failure | None = None,
                  waiting_for: str | None = None) -> None:
        """What a request that finds no routable replica is told (wait while starting; the kind of
        the API's failure; what a replica waits for before it can start, e.g. "a free GPU")."""

    def replica_in_flight(self, api: str, replica_id: str) -> int:
        """Requests in progress on one replica (a draining replica stops at 0)."""

    def route(self, api: str) -> CountedRoute:
        """The configured route of `api` (its request counters)."""


class GPUPlacement(Protocol):
    """GPU assignment for replicas that ask for compute.gpu (cortexd/daemon/gpu_placer.py)."""

    def assign(self, spec: APISpec, replica_id: str, observed: Mapping[str, ReplicaInfo]) -> Placement:
        """The GPU indices for the new replica, or why it must wait (or that the host has none)."""


class WorkerGPUs(Protocol):
    """GPUs for a BatchAPI job's workers, placed as replicas' are (gpu_placer.WorkerPlacement)."""

    def place(self, spec: APISpec, worker_id: str) -> Placement:
        """The GPUs the worker gets (held until release()), or why it waits (or that there are none)."""

    def release(self, worker_id: str) -> None:
        """The worker ended: its GPUs are free."""


@dataclass(frozen=True)
class ScaledAPI:
    """One API as the autoscaler sees it: its spec, its replica count, when it was (re)deployed."""

    spec: APISpec
    desired: int
    deployed_at: float  # monotonic; stabilization and sample history start here


class ScalingTarget(Protocol):
    """The reconciler, as the autoscaler reads and sets replica counts."""

    def scaled_apis(self) -> dict[str, ScaledAPI]:
        """Every configured API, by name."""

    def ready_replicas(self, apis: Collection[str]) -> dict[str, str]:
        """{replica id: api} of the running, ready, not draining replicas of `apis`."""

    async def cpu_seconds(self, replica_ids: list[str]) -> dict[str, float]:
        """CPU time used so far by each replica (the backend's reading)."""

    def set_desired(self, api: str, count: int, decision: str | None = None) -> None:
        """Converge `api` to `count` replicas; `decision` (in words) shows in `cortexd get`."""

    def note_decision(self, api: str, decision: str) -> None:
        """Show `decision` as the API's last autoscaler decision, leaving its count."""


class PinChanges(Protocol):
    """The process backend's environments (backends/environments.py), as the status reads them."""

    def changes(self, api: str) -> tuple[str, ...]:
        """Each nearest pin the environment of `api`'s current version installed instead of its
        requirements.txt's, in words ("scikit-learn==0.21.3 -> 1.1.3: ..."); () for none."""


class ControlledDaemon(Protocol):
    """The daemon, as the control API (daemon/control.py) serves it: each handler is one call."""

    events: EventLog
    guarded_pid: int | None  # the daemon's pid once it guards itself (process_guard.py), else None

    def replica_of_peer(self, pid: int, uid: int) -> str | None:
        """The replica a control-socket peer belongs to (the backend's answer), else None."""

    def status(self) -> Status:
        """The status snapshot (GET /status, /metrics)."""

    async def counted(self) -> None:
        """Wait, briefly, until every gateway process's request counts are in (gateway workers
        report on their own every 0.5 s): what GET /status and /metrics read next is current."""

    async def replica_models(self, name: str) -> dict[str, dict]:
        """{replica id: what it serves} (GET /apis/{name})."""

    def log_sources(self, name: str, previous: bool = False, job: str | None = None) -> list[tuple[str, str | None]]:
        """(replica id, log file) of the API's replicas (`previous`: of the daemon's previous run;
        `job`: a BatchAPI's job, its workers'); raises UnknownAPI."""

    def stream_logs(self, name: str, sources: list[tuple[str, str | None]], tail: int | None,
                    follow: bool, since: float | None = None) -> AsyncIterator[str]:
        """The log lines (GET /apis/{name}/logs)."""

    async def deploy(self, paths: Sequence[str], *, cpu_only: bool = False, nearest_pins: bool = False) -> dict:
        """POST /deploy; raises ConfigError or CortexdError."""

    async def delete_api(self, name: str) -> None:
        """DELETE /apis/{name}; raises UnknownAPI."""

    async def batch_api(self, name: str, job_id: str | None = None, *, stop: bool = False) -> dict | None:
        """A BatchAPI's jobs (GET /apis/{name}) or one job (GET, DELETE /apis/{name}/jobs/{job});
        None when no BatchAPI has that name; raises UnknownAPI (no such job), RequestError."""

    def request_shutdown(self) -> None:
        """POST /shutdown: start a graceful shutdown."""

    def route_metrics(self) -> list[tuple[str, APIMetrics, Monitor | None]]:
        """Each API's cumulative request metrics and monitor (Prometheus)."""

    def split_metrics(self) -> list[tuple[str, str, APIMetrics]]:
        """(splitter, api, what the splitter sent it) per splitter api, for /metrics."""

    def unrouted_requests(self) -> int:
        """Requests for a path no API serves."""
