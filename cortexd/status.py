"""The status model: one typed snapshot of the daemon for `/status`, `get`, `status`, `-o json`, /metrics.

Frozen dataclasses (daemon, API, replica counts, replica, GPU status) built by one
pure function, `build_status`, from values the daemon collects in its I/O shell:
the reconciler's API states and replica records, what the backend observed, the
gateway's traffic counters, the recent events and the GPU inventory. `to_json()`
is the one serialisation (the control API's /status body, `cortexd get -o json`);
`Status.from_json()` reads it back on the CLI's side, so the renderers
(cortexd/ui/) and the Prometheus collector (cortexd/gateway/metrics.py) read
attributes, never keys. The gateway's request counters (`APIStatus.requests`) and
the monitoring summary inside them keep the gateway's own shape
(cortexd/gateway/routes.py `counters_snapshot`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the CLI imports this module without the daemon
    from cortexd.backends.base import ReplicaInfo
    from cortexd.daemon.reconciler import APIState, ReplicaRecord


@dataclass(frozen=True)
class DaemonStatus:
    version: str
    pid: int
    backend: str | None
    backend_reason: str | None
    host: str
    uptime_s: float
    config_files: tuple[str, ...]
    config_error: str | None
    notices: tuple[str, ...]
    metrics_url: str | None

    def to_json(self) -> dict:
        return {"version": self.version, "pid": self.pid, "backend": self.backend,
                "backend_reason": self.backend_reason, "host": self.host, "uptime_s": self.uptime_s,
                "config_files": list(self.config_files), "config_error": self.config_error,
                "notices": list(self.notices), "metrics_url": self.metrics_url}

    @classmethod
    def from_json(cls, d: Mapping) -> DaemonStatus:
        return cls(d.get("version", "?"), d.get("pid", 0), d.get("backend"), d.get("backend_reason"),
                   d.get("host", ""), d.get("uptime_s", 0.0), tuple(d.get("config_files") or ()),
                   d.get("config_error"), tuple(d.get("notices") or ()), d.get("metrics_url"))


@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    state: str  # starting | ready | draining | stopping
    current: bool  # runs the API's current spec
    address: str
    age_s: float
    in_flight: int
    gpu_ids: tuple[int, ...]
    health: str | None  # None while healthy
    backend: Mapping[str, Any]  # pid (process) or container id (docker)

    def to_json(self) -> dict:
        return {"id": self.id, "state": self.state, "current": self.current, "address": self.address,
                "age_s": self.age_s, "in_flight": self.in_flight, "gpu_ids": list(self.gpu_ids),
                "health": self.health, "backend": dict(self.backend)}

    @classmethod
    def from_json(cls, d: Mapping) -> ReplicaStatus:
        return cls(d["id"], d["state"], d.get("current", True), d.get("address", ""), d.get("age_s", 0.0),
                   d.get("in_flight", 0), tuple(d.get("gpu_ids") or ()), d.get("health"),
                   dict(d.get("backend") or {}))


@dataclass(frozen=True)
class ReplicaCounts:
    requested: int
    ready: int
    starting: int
    pending_reason: str | None  # why requested replicas are not started (GPU, backoff...)
    restarts: int
    min: int
    max: int

    def to_json(self) -> dict:
        return {"requested": self.requested, "ready": self.ready, "starting": self.starting,
                "pending_reason": self.pending_reason, "restarts": self.restarts,
                "min": self.min, "max": self.max}

    @classmethod
    def from_json(cls, d: Mapping) -> ReplicaCounts:
        return cls(d["requested"], d["ready"], d.get("starting", 0), d.get("pending_reason"),
                   d.get("restarts", 0), d.get("min", 0), d.get("max", 0))


@dataclass(frozen=True)
class APIStatus:
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

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "predictor_type": self.predictor_type,
                "status": self.status, "reason": self.reason, "endpoint": self.endpoint,
                "local_port": self.local_port, "spec_hash": self.spec_hash, "source": self.source,
                "replicas": self.replicas.to_json(),
                "replica_list": [r.to_json() for r in self.replica_list],
                "in_flight": self.in_flight, "requests": dict(self.requests),
                "last_decision": self.last_decision, "url": self.url,
                "isolation": dict(self.isolation) if self.isolation is not None else None}

    @classmethod
    def from_json(cls, d: Mapping) -> APIStatus:
        return cls(d["name"], d.get("kind", ""), d.get("predictor_type", ""), d["status"], d.get("reason"),
                   d.get("endpoint", ""), d.get("local_port", 0), d.get("spec_hash", ""),
                   d.get("source", ""), ReplicaCounts.from_json(d["replicas"]),
                   tuple(ReplicaStatus.from_json(r) for r in d.get("replica_list") or ()),
                   d.get("in_flight", 0), dict(d.get("requests") or {}), d.get("last_decision"),
                   d.get("url", ""), d.get("isolation"))


@dataclass(frozen=True)
class GPUDevice:
    index: int
    name: str
    uuid: str | None
    utilization: int | None  # percent over NVML's last sample period
    memory_used: int | None
    memory_total: int | None

    def to_json(self) -> dict:
        return {"index": self.index, "name": self.name, "uuid": self.uuid, "utilization": self.utilization,
                "memory_used": self.memory_used, "memory_total": self.memory_total}

    @classmethod
    def from_json(cls, d: Mapping) -> GPUDevice:
        return cls(d["index"], d.get("name", ""), d.get("uuid"), d.get("utilization"),
                   d.get("memory_used"), d.get("memory_total"))


@dataclass(frozen=True)
class GPUStatus:
    devices: tuple[GPUDevice, ...]
    reason: str | None  # why there are none
    driver_version: str | None

    def to_json(self) -> dict:
        return {"devices": [d.to_json() for d in self.devices], "reason": self.reason,
                "driver_version": self.driver_version}

    @classmethod
    def from_json(cls, d: Mapping) -> GPUStatus:
        return cls(tuple(GPUDevice.from_json(x) for x in d.get("devices") or ()), d.get("reason"),
                   d.get("driver_version"))

    @classmethod
    def of(cls, inventory) -> GPUStatus:
        """From a cortexd.gpu.GPUInventory."""
        return cls(tuple(GPUDevice(d.index, d.name, d.uuid, d.utilization, d.memory_used, d.memory_total)
                         for d in inventory.devices), inventory.reason, inventory.driver_version)


@dataclass(frozen=True)
class EventStatus:
    at: float  # wall-clock seconds
    level: str  # info | warning | error
    message: str
    api: str | None

    def to_json(self) -> dict:
        return {"at": self.at, "level": self.level, "message": self.message, "api": self.api}

    @classmethod
    def from_json(cls, d: Mapping) -> EventStatus:
        return cls(d["at"], d.get("level", "info"), d["message"], d.get("api"))


@dataclass(frozen=True)
class Status:
    daemon: DaemonStatus
    apis: tuple[APIStatus, ...]
    events: tuple[EventStatus, ...]  # oldest first
    gpus: GPUStatus | None  # None: not read (no placer)

    def to_json(self) -> dict:
        return {"daemon": self.daemon.to_json(), "apis": [a.to_json() for a in self.apis],
                "events": [e.to_json() for e in self.events],
                "gpus": self.gpus.to_json() if self.gpus is not None else None}

    @classmethod
    def from_json(cls, d: Mapping) -> Status:
        gpus = d.get("gpus")
        return cls(DaemonStatus.from_json(d.get("daemon") or {}),
                   tuple(APIStatus.from_json(a) for a in d.get("apis") or ()),
                   tuple(EventStatus.from_json(e) for e in d.get("events") or ()),
                   GPUStatus.from_json(gpus) if gpus is not None else None)

    def api(self, name: str) -> APIStatus | None:
        return next((a for a in self.apis if a.name == name), None)


@dataclass(frozen=True)
class APITraffic:
    """What the gateway counts for one API, read once per snapshot."""

    in_flight: int = 0
    replica_in_flight: Mapping[str, int] = field(default_factory=dict)
    requests: Mapping[str, Any] = field(default_factory=dict)


def replica_state(rec: ReplicaRecord) -> str:
    if rec.stopping:
        return "stopping"
    if rec.draining_since is not None:
        return "draining"
    return "ready" if rec.ready_at is not None else "starting"


def replica_health(rec: ReplicaRecord, mono_now: float) -> str | None:
    if rec.unhealthy is not None:
        return f"unhealthy: {rec.unhealthy}"
    if rec.out_of_rotation is not None and (rec.ejected_until is None or mono_now < rec.ejected_until):
        return f"out of rotation: {rec.out_of_rotation}"
    return None


def build_api_status(state: APIState, records: Mapping[str, ReplicaRecord],
                     observed: Iterable[ReplicaInfo], traffic: APITraffic, *, url: str,
                     preparing: tuple[str, str | None] | None, wall_now: float,
                     mono_now: float, isolation: Mapping[str, Any] | None = None) -> APIStatus:
    """One API's status. preparing: what the backend prepares for it (the process backend's
    environments: ("installing requirements", "torch")), shown while it is updating."""
    spec = state.spec
    replicas = []
    for info in observed:
        rec = records.get(info.replica_id)
        if info.api != spec.name or rec is None:
            continue
        replicas.append(ReplicaStatus(
            info.replica_id, replica_state(rec), info.spec_hash == spec.spec_hash,
            f"{info.host}:{info.port}", round(max(0.0, wall_now - info.started_at), 1),
            traffic.replica_in_flight.get(info.replica_id, 0), tuple(info.gpu_ids),
            replica_health(rec, mono_now), dict(info.extra)))
    replicas.sort(key=lambda r: r.id)
    status, pending, reason = state.status, state.pending_reason, state.reason
    if preparing and status == "updating":  # `updating (installing requirements)`, and what pip is on
        status = f"updating ({preparing[0]})"
        pending = reason = f"{preparing[0]}: {preparing[1]}" if preparing[1] else preparing[0]
    counts = ReplicaCounts(
        requested=state.desired, ready=sum(r.state == "ready" for r in replicas),
        starting=sum(r.state == "starting" for r in replicas), pending_reason=pending,
        restarts=state.restarts, min=spec.autoscaling.min_replicas, max=spec.autoscaling.max_replicas)
    return APIStatus(
        spec.name, spec.kind, spec.predictor.type, status, reason, spec.networking.endpoint,
        spec.networking.local_port, spec.spec_hash, f"{spec.source_file}:{spec.source_line}",
        counts, tuple(replicas), traffic.in_flight, dict(traffic.requests), state.last_decision, url,
        isolation)


def build_status(daemon: DaemonStatus, apis: Iterable[APIState], records: Mapping[str, ReplicaRecord],
                 observed: Mapping[str, ReplicaInfo], traffic: Mapping[str, APITraffic],
                 events: Sequence, gpus: GPUStatus | None, *, urls: Mapping[str, str],
                 preparing: Mapping[str, tuple[str, str | None] | None], wall_now: float,
                 mono_now: float, isolation: Mapping[str, Mapping[str, Any] | None] | None = None) -> Status:
    """The whole snapshot, APIs sorted by name; `events` are cortexd.daemon.events.Event values."""
    built = tuple(
        build_api_status(state, records, observed.values(), traffic.get(state.spec.name, APITraffic()),
                         url=urls.get(state.spec.name, ""), preparing=preparing.get(state.spec.name),
                         wall_now=wall_now, mono_now=mono_now,
                         isolation=(isolation or {}).get(state.spec.name))
        for state in sorted(apis, key=lambda s: s.spec.name))
    return Status(daemon, built, tuple(EventStatus(e.at, e.level, e.message, e.api) for e in events), gpus)
