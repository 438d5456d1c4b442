"""The status model: one typed snapshot of the daemon for `/status`, `get`, `status`, `-o json`, /metrics.

Frozen dataclasses (daemon, API, replica counts, replica, GPU status) built by one
pure function, `build_status`, from values the daemon collects in its I/O shell:
each API's and each replica's facts (APIFacts, ReplicaFacts: what the reconciler
holds and the backend observed), the gateway's traffic counters, the recent events
and the GPU inventory. The model sits below the daemon and imports nothing of it,
so the CLI and the renderers read it without the daemon. `to_json()`
is the one serialisation (the control API's /status body, `cortexd get -o json`);
`Status.from_json()` reads it back on the CLI's side, both declared by the fields
themselves (JSONRecord, cortexd/dataclass_json.py: a new field needs no code there;
`metadata={"absent": ...}` names what a key older daemons lack reads as), so the renderers
(cortexd/ui/) and the Prometheus collector (cortexd/daemon/prometheus.py) read
attributes, never keys. The gateway's request counters (`APIStatus.requests`) and
the monitoring summary inside them keep the gateway's own shape
(cortexd/gateway/routes.py `counters_snapshot`). `APIStatus.failure` is the kind of
what keeps an API from serving (cortexd/core/api_status.py `Failure`), for programs:
the CLI reads it, never the sentence in `reason`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cortexd.core.api_status import Failure, shown_failure
from cortexd.core.placement import on_cpu_note
from cortexd.core.splitting import share_notes
from cortexd.dataclass_json import JSONRecord
from cortexd.settings import OPTIONS

if TYPE_CHECKING:  # annotations only: the CLI imports this module without the spec loader
    from cortexd.nvml import GPUInventory
    from cortexd.spec.model import APISpec, SplitterSpec


@dataclass(frozen=True)
class DaemonStatus(JSONRecord):
    version: str = field(metadata={"absent": "?"})
    pid: int
    backend: str | None
    backend_reason: str | None
    host: str
    uptime_s: float
    config_files: tuple[str, ...]
    config_error: str | None
    notices: tuple[str, ...]
    metrics_url: str | None


@dataclass(frozen=True)
class ReplicaStatus(JSONRecord):
    id: str
    state: str  # starting | ready | draining | stopping
    current: bool = field(metadata={"absent": True})  # runs the API's current spec
    address: str
    age_s: float
    in_flight: int
    gpu_ids: tuple[int, ...]
    health: str | None  # None while healthy
    backend: Mapping[str, Any]  # pid (process) or container id (docker)


@dataclass(frozen=True)
class ReplicaCounts(JSONRecord):
    requested: int
    ready: int
    starting: int
    pending_reason: str | None  # why requested replicas are not started (GPU, backoff...)
    restarts: int
    min: int
    max: int


@dataclass(frozen=True)
class APIStatus(JSONRecord):
    name: str
    kind: str
    predictor_type: str
    status: str  # live | updating | updating (what it prepares) | error
    reason: str | None
    endpoint: str
    local_port: int
    spec_hash: str
    source: str  # file:line of its definition
    replicas: ReplicaCounts
    replica_list: tuple[ReplicaStatus, ...]
    in_flight: int
    requests: Mapping[str, Any]  # the gateway's counters (empty before its route exists)
    last_decision: str | None  # the autoscaler's, in words
    url: str
    # who its replicas run as and which limits hold (the backend's isolation(): runs_as,
    # isolated, notice, limits); None before its first replica start
    isolation: Mapping[str, Any] | None = None
    # the kind of what keeps it from serving (core.api_status.shown_failure); None: nothing does
    failure: Failure | None = None
    # compute.gpu served on the CPU (`--cpu-only`), in words (core.placement.on_cpu_note); else None
    gpu_note: str | None = None
    # each nearest pin its environment installed instead of requirements.txt's, in words
    # ("scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11"; issue 17)
    pins: tuple[str, ...] = ()
    # requests/s over the last 2 minutes, a point per 5 s, oldest first (cortexd/history.py
    # APIHistory.trend; empty until the daemon's sampler has taken some): the live view's sparkline
    trend: tuple[float, ...] = ()


@dataclass(frozen=True)
class GPUDevice(JSONRecord):
    index: int
    name: str
    uuid: str | None
    utilization: int | None  # percent over NVML's last sample period
    memory_used: int | None
    memory_total: int | None


@dataclass(frozen=True)
class GPUStatus(JSONRecord):
    devices: tuple[GPUDevice, ...]
    reason: str | None  # why there are none
    driver_version: str | None

    @classmethod
    def of(cls, inventory: GPUInventory) -> GPUStatus:
        """From a cortexd.gpu.GPUInventory."""
        return cls(tuple(GPUDevice(d.index, d.name, d.uuid, d.utilization, d.memory_used, d.memory_total)
                         for d in inventory.devices), inventory.reason, inventory.driver_version)


@dataclass(frozen=True)
class EventStatus(JSONRecord):
    at: float  # wall-clock seconds
    level: str = field(metadata={"absent": "info"})  # info | warning | error
    message: str
    api: str | None
    kind: str | None  # a mark on its API's charts (cortexd/history.py), or None


@dataclass(frozen=True)
class SplitTargetStatus(JSONRecord):
    """One api of a traffic splitter, as `cortexd get SPLITTER` shows it."""

    name: str
    weight: int
    shadow: bool
    share: float  # percent of the splitter's requests it takes now (a shadow: 0; it gets copies)
    status: str  # the api's own status (live, updating, error), or "not deployed"
    down: str | None  # why it takes no traffic now ("is in error"); None: it does
    requests: Mapping[str, Any]  # what the splitter sent it (the gateway's counters)
    dropped: int  # shadow copies not sent (the shadow was down or at its concurrency limit)


@dataclass(frozen=True)
class SplitterStatus(JSONRecord):
    """A traffic splitter: its endpoint, its apis and where its traffic goes now."""

    name: str
    kind: str
    status: str  # live | degraded (an api takes no traffic) | down (none can: requests get 503)
    endpoint: str
    local_port: int
    url: str
    source: str  # file:line of its definition
    spec_hash: str
    targets: tuple[SplitTargetStatus, ...]
    notes: tuple[str, ...]  # where a down api's share goes (core.splitting.share_notes)
    refused: int  # requests answered 503: no api could take them


@dataclass(frozen=True)
class JobProgress(JSONRecord):
    """One job of a BatchAPI as the live view draws it and /metrics exports it: its batches by
    state, the items of those that succeeded, its workers and its times."""

    job_id: str
    status: str  # Cortex 0.23's value (core.batch_jobs.JobStatus): status_running, status_succeeded, ...
    created: float  # wall-clock seconds
    ended: float | None
    workers: int  # asked for (after the host's bound)
    workers_running: int
    queued: int
    running: int
    succeeded: int
    failed: int
    items_succeeded: int  # items in the batches that succeeded
    avg_batch_s: float | None  # average time of a succeeded batch (None before one)

    @property
    def total(self) -> int:
        return self.queued + self.running + self.succeeded + self.failed

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def elapsed(self, now: float) -> float:
        return max(0.0, (self.ended if self.ended is not None else now) - self.created)


@dataclass(frozen=True)
class BatchAPIStatus(JSONRecord):
    """A BatchAPI: its endpoint and its jobs, counted (`cortexd get API` lists them), the jobs
    shown one by one (core.batch_jobs.shown_jobs: those not ended, then the last few ended) and
    totals over every job it ran."""

    name: str
    url: str
    jobs: int  # submitted, all time
    running: int  # not ended
    job_list: tuple[JobProgress, ...] = ()  # newest first
    jobs_by_status: Mapping[str, int] = field(default_factory=dict)  # Cortex's status value: jobs
    batches_succeeded: int = 0  # every job's, all time
    batches_failed: int = 0
    items_succeeded: int = 0
    workers_running: int = 0


@dataclass(frozen=True)
class Status(JSONRecord):
    daemon: DaemonStatus
    apis: tuple[APIStatus, ...]
    events: tuple[EventStatus, ...]  # oldest first
    gpus: GPUStatus | None  # None: not read (no placer)
    splitters: tuple[SplitterStatus, ...] = ()
    batch_apis: tuple[BatchAPIStatus, ...] = ()

    def api(self, name: str) -> APIStatus | None:
        return next((a for a in self.apis if a.name == name), None)

    def splitter(self, name: str) -> SplitterStatus | None:
        return next((s for s in self.splitters if s.name == name), None)


@dataclass(frozen=True)
class APITraffic:
    """What the gateway counts for one API, read once per snapshot."""

    in_flight: int = 0
    replica_in_flight: Mapping[str, int] = field(default_factory=dict)
    requests: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class APIFacts:
    """One API as the daemon holds it (the reconciler's answer): an input of build_status."""

    spec: APISpec
    desired: int
    status: str  # live | updating | error
    reason: str | None
    pending_reason: str | None  # why requested replicas are not started (GPU, backoff...)
    restarts: int
    last_decision: str | None  # the autoscaler's, in words
    failure: Failure | None = None  # the kind of the failure `reason` tells, if it tells one
    pending: Failure | None = None  # the kind of `pending_reason`, when it has one (NO_GPU)


@dataclass(frozen=True)
class ReplicaFacts:
    """One replica as the daemon knows it: what its backend observed, what the reconciler recorded."""

    replica_id: str
    api: str
    spec_hash: str
    address: str  # host:port
    started_at: float  # wall-clock seconds
    gpu_ids: tuple[int, ...]
    backend: Mapping[str, Any]  # pid (process) or container id (docker)
    state: str  # starting | ready | draining | stopping
    unhealthy: str | None = None  # why it is being replaced
    out_of_rotation: str | None = None  # why the gateway ejected it, until `ejected_until`
    ejected_until: float | None = None  # monotonic


def replica_health(replica: ReplicaFacts, mono_now: float) -> str | None:
    if replica.unhealthy is not None:
        return f"unhealthy: {replica.unhealthy}"
    until = replica.ejected_until
    if replica.out_of_rotation is not None and (until is None or mono_now < until):
        return f"out of rotation: {replica.out_of_rotation}"
    return None


def build_api_status(api: APIFacts, replicas: Iterable[ReplicaFacts], traffic: APITraffic, *, url: str,
                     preparing: tuple[str, str | None] | None, wall_now: float,
                     mono_now: float, isolation: Mapping[str, Any] | None = None,
                     host_has_gpu: bool | None = None, pins: Sequence[str] = (),
                     trend: Sequence[float] = ()) -> APIStatus:
    """One API's status from its facts and its replicas' (other APIs' replicas are skipped).
    preparing: what the backend prepares for it (the process backend's environments:
    ("installing requirements", "torch")), shown while it is updating; host_has_gpu: whether
    NVML found a GPU (None: not read)."""
    spec = api.spec
    shown = []
    for replica in replicas:
        if replica.api != spec.name:
            continue
        shown.append(ReplicaStatus(
            replica.replica_id, replica.state, replica.spec_hash == spec.spec_hash, replica.address,
            round(max(0.0, wall_now - replica.started_at), 1),
            traffic.replica_in_flight.get(replica.replica_id, 0), tuple(replica.gpu_ids),
            replica_health(replica, mono_now), dict(replica.backend)))
    shown.sort(key=lambda r: r.id)
    status, pending, reason, waits = api.status, api.pending_reason, api.reason, api.pending
    if preparing and status == "updating":  # `updating (installing requirements)`, and what pip is on
        status = f"updating ({preparing[0]})"
        pending = reason = f"{preparing[0]}: {preparing[1]}" if preparing[1] else preparing[0]
        waits = None
    counts = ReplicaCounts(
        requested=api.desired, ready=sum(r.state == "ready" for r in shown),
        starting=sum(r.state == "starting" for r in shown), pending_reason=pending,
        restarts=api.restarts, min=spec.autoscaling.min_replicas, max=spec.autoscaling.max_replicas)
    return APIStatus(
        spec.name, spec.kind, spec.predictor.type, status, reason, spec.networking.endpoint,
        spec.networking.local_port, spec.spec_hash, f"{spec.source_file}:{spec.source_line}",
        counts, tuple(shown), traffic.in_flight, dict(traffic.requests), api.last_decision, url,
        isolation, shown_failure(api.status, api.failure, waits),
        on_cpu_note(spec.compute.gpu, OPTIONS["cpu_only"].flag or "", host_has_gpu) if spec.cpu_only else None,
        tuple(pins), tuple(trend))


@dataclass(frozen=True)
class SplitterFacts:
    """One traffic splitter as the daemon holds it: its spec, its URL and the gateway's view
    (routes.SplitRoute.snapshot: per target, why it is down, its share, its counters)."""

    spec: SplitterSpec
    url: str
    traffic: Mapping[str, Any] = field(default_factory=dict)


def build_splitter_status(facts: SplitterFacts, apis: Mapping[str, APIStatus]) -> SplitterStatus:
    """A splitter's status from its facts and its apis' statuses."""
    spec, per_target = facts.spec, facts.traffic.get("targets", {})
    targets, down = [], {}
    for t in spec.targets:
        seen = per_target.get(t.name, {})
        why = seen.get("down", "is not deployed" if t.name not in apis else None)
        api = apis.get(t.name)
        targets.append(SplitTargetStatus(t.name, t.weight, t.shadow, round(seen.get("share", 0.0), 2),
                                         api.status if api is not None else "not deployed", why,
                                         dict(seen.get("requests", {})), int(seen.get("dropped", 0))))
        if why is not None and not t.shadow:
            down[t.name] = why
    notes = share_notes([(t.name, t.weight) for t in spec.targets if not t.shadow], down)
    notes += [f"shadow api {t.name!r} {t.down}; its copies are dropped" for t in targets if t.shadow and t.down]
    live = any(t.share > 0 for t in targets)
    status = "down" if not live else ("degraded" if down else "live")
    return SplitterStatus(spec.name, "TrafficSplitter", status, spec.networking.endpoint,
                          spec.networking.local_port, facts.url, f"{spec.source_file}:{spec.source_line}",
                          spec.spec_hash, tuple(targets), tuple(notes), int(facts.traffic.get("refused", 0)))


def build_status(daemon: DaemonStatus, apis: Iterable[APIFacts], replicas: Iterable[ReplicaFacts],
                 traffic: Mapping[str, APITraffic], events: Sequence[Any], gpus: GPUStatus | None, *,
                 urls: Mapping[str, str], preparing: Mapping[str, tuple[str, str | None] | None],
                 wall_now: float, mono_now: float,
                 isolation: Mapping[str, Mapping[str, Any] | None] | None = None,
                 pins: Mapping[str, Sequence[str]] | None = None,
                 splitters: Iterable[SplitterFacts] = (),
                 trends: Mapping[str, Sequence[float]] | None = None) -> Status:
    """The whole snapshot, APIs and splitters sorted by name; `events` are cortexd.daemon.events.Event values."""
    by_api: dict[str, list[ReplicaFacts]] = {}
    for replica in replicas:
        by_api.setdefault(replica.api, []).append(replica)
    built = tuple(
        build_api_status(api, by_api.get(api.spec.name, ()), traffic.get(api.spec.name, APITraffic()),
                         url=urls.get(api.spec.name, ""), preparing=preparing.get(api.spec.name),
                         wall_now=wall_now, mono_now=mono_now,
                         isolation=(isolation or {}).get(api.spec.name),
                         host_has_gpu=None if gpus is None else bool(gpus.devices),
                         pins=(pins or {}).get(api.spec.name, ()),
                         trend=(trends or {}).get(api.spec.name, ()))
        for api in sorted(apis, key=lambda a: a.spec.name))
    by_name = {a.name: a for a in built}
    split = tuple(build_splitter_status(f, by_name) for f in sorted(splitters, key=lambda f: f.spec.name))
    return Status(daemon, built, tuple(EventStatus(e.at, e.level, e.message, e.api, e.kind) for e in events), gpus,
                  split)
