"""The gateway's route table: APIs, their routable replicas, per-API counters, listening ports.

The daemon describes each API it wants served with a RouteConfig (Gateway.configure).
The gateway keeps one APIRoute per API (route_book.py) and, for every listening port
(a Listener), a plain dict from request path to APIRoute built once by `port_table()`
whenever the configuration changes, so the request path does a single dict lookup
(no regexes, no per-request parsing of the endpoint).

The daemon reads these objects for status (`counters_snapshot()`, in-flight
counts); only the gateway mutates them. Counters (APIMetrics, Monitor in
metrics.py) are plain ints: the gateway runs on one event loop thread, so no
locks are needed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cortexd.core.health import HEALTHY, ReplicaHealth
from cortexd.gateway.metrics import APIMetrics, Monitor
from cortexd.spec.model import APISpec, MonitoringSpec

if TYPE_CHECKING:
    from aiohttp import web


@dataclass(frozen=True)
class RouteConfig:
    """One API as the daemon wants it served: Gateway.configure() takes one per API."""

    name: str
    endpoint: str
    port: int  # the local_port it is served on
    max_replica_concurrency: int
    monitoring: MonitoringSpec | None = None  # set: its predictions are aggregated (metrics.Monitor)

    @classmethod
    def of(cls, spec: APISpec) -> RouteConfig:
        return cls(spec.name, spec.networking.endpoint, spec.networking.local_port,
                   spec.autoscaling.max_replica_concurrency, spec.monitoring)


@dataclass(eq=False)
class ReplicaTarget:
    """One routable replica of an API. Mutable: the gateway updates `in_flight`."""

    replica_id: str
    host: str
    port: int
    in_flight: int = 0
    # the keep-alive connection pool to this replica (cortexd.gateway.upstream.UpstreamPool)
    pool: Any = field(default=None, repr=False)
    # True once set_replicas() dropped it: no new requests, in-flight ones finish
    removed: bool = False
    # passive health (cortexd.core.health): failure streaks, ejection from rotation
    health: ReplicaHealth = HEALTHY
    # while ejected: the timer that puts it back into rotation (asyncio.TimerHandle)
    readmit: Any = field(default=None, repr=False)


class APIRoute:
    """One API as the gateway sees it: where it is served, where it goes, what happened."""

    __slots__ = (
        "_changed",
        "draining",
        "ejected",
        "endpoint",
        "error",
        "in_flight",
        "max_replica_concurrency",
        "metrics",
        "monitor",
        "name",
        "port",
        "replicas",
        "rr",
        "starting",
        "waiting_for",
    )

    def __init__(self, name: str, endpoint: str, port: int, max_replica_concurrency: int):
        self.name = name
        self.endpoint = endpoint
        self.port = port
        self.max_replica_concurrency = max_replica_concurrency
        self.replicas: list[ReplicaTarget] = []  # ready, routable ones only
        # removed replicas that still hold in-flight requests, by replica id
        self.draining: dict[str, ReplicaTarget] = {}
        # configured replicas out of rotation (passive health: ejected or hung), by replica id
        self.ejected: dict[str, ReplicaTarget] = {}
        self.in_flight = 0  # API-wide
        self.metrics = APIMetrics()  # counts, latency, req/s (cortexd.gateway.metrics)
        self.monitor: Monitor | None = None  # set for APIs with `monitoring`
        self.starting = True  # no replica yet, one is expected: requests wait
        self.error: str | None = None
        self.waiting_for: str | None = None  # what must come before a replica can start (a free GPU)
        self.rr = 0  # round-robin start for ties in core.routing.pick_replica
        self._changed: asyncio.Event | None = None

    def set_monitoring(self, model_type: str | None, key: str | None) -> None:
        """Start (or stop, with None) aggregating predictions; a changed setting starts over."""
        if model_type is None:
            self.monitor = None
        elif self.monitor is None or (self.monitor.model_type, self.monitor.key) != (model_type, key):
            self.monitor = Monitor(model_type, key)

    def counters_snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Counters for status views: total, 2xx, 4xx, 5xx, in-flight, req/s, p50/p99, monitoring."""
        now = time.monotonic() if now is None else now
        out = {**self.metrics.summary(now), "in_flight": self.in_flight}
        out["monitoring"] = self.monitor.summary() if self.monitor is not None else None
        return out

    # -- waiting for a replica (no polling: set_replicas/set_state wake waiters) --

    def changed_event(self) -> asyncio.Event:
        """An event set at the next change of replicas or state (one per change)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def notify_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None  # the next waiter gets a fresh event

    def __repr__(self) -> str:
        return (f"APIRoute({self.name!r}, endpoint={self.endpoint!r}, port={self.port}, "
                f"replicas={[r.replica_id for r in self.replicas]}, in_flight={self.in_flight})")


class Listener:
    """One listening port: its aiohttp server and the route table it serves."""

    def __init__(self, port: int):
        self.port = port
        self.table: dict[str, APIRoute] = {}
        self.endpoints: list[str] = []  # "/<endpoint>" of each API served here, for 404 answers
        self.web_server: web.Server | None = None
        self.server: asyncio.AbstractServer | None = None

    def serve(self, routes: list[APIRoute]) -> None:
        """Serve `routes` from now on (the APIs configured on this port)."""
        self.table = port_table(routes)
        self.endpoints = sorted("/" + r.endpoint.strip("/") for r in routes)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let running requests finish (up to `timeout`), close connections."""
        if self.server is not None:
            self.server.close()
        if self.web_server is not None:
            self.web_server.pre_shutdown()
            await self.web_server.shutdown(timeout)


def port_table(routes: list[APIRoute]) -> dict[str, APIRoute]:
    """Request path -> APIRoute for the APIs served on one port.

    `/<endpoint>` and `/<endpoint>/` route to the API; an API alone on its port
    is also served at `/` (Cortex local-mode compatibility).
    """
    table: dict[str, APIRoute] = {}
    for route in routes:
        path = "/" + route.endpoint.strip("/")
        table[path] = route
        if path != "/":
            table[path + "/"] = route
    if len(routes) == 1:
        table.setdefault("/", routes[0])
    return table


def endpoint_clashes(apis: list[tuple[str, str, int]]) -> list[str]:
    """Sentences for APIs that claim the same endpoint on one port: (name, endpoint, port) each."""
    seen: dict[tuple[int, str], str] = {}
    problems = []
    for name, endpoint, port in sorted(apis):
        key = (port, "/" + endpoint.strip("/"))
        if key in seen:
            problems.append(
                f"apis {seen[key]!r} and {name!r} both use endpoint {key[1]} on port {port}; "
                "give one of them a different networking.endpoint or networking.local_port"
            )
        else:
            seen[key] = name
    return problems
