"""The gateway's route table: APIs, their routable replicas, per-API counters, listening ports;
and traffic splitters.

The daemon describes each API it wants served with a RouteConfig, and each traffic
splitter with a SplitConfig (Gateway.configure). The gateway keeps one APIRoute per API
and one SplitRoute per splitter (route_book.py) and, for every listening port (a
Listener), a plain dict from request path to route built once by `port_table()`
whenever the configuration changes, so the request path does a single dict lookup
(no regexes, no per-request parsing of the endpoint).

A JobRoute (a BatchAPI's endpoint) sits there too: its requests are handed whole to the
daemon's job runner. A SplitRoute sits in the port table at the splitter's endpoint. The request path
(request_path.py) takes one weighted choice per request (`SplitRoute.choose`:
core.splitting.pick_target on a table made in advance) and serves the request through the
chosen api's own APIRoute, exactly as if it had been sent there (its limits, its 503s, its
metrics); the splitter counts it once more, per target (`SplitTarget.metrics`). The route
book calls `refresh` whenever the splitter's configuration or the state of one of its apis
changes: an api that is not deployed, in error with no ready replica, or waiting for a GPU
takes no traffic and its weight goes to the live ones (core.splitting). A weight change
swaps the table between two requests, in place: a hot reload drops nothing. A shadow
target gets copies of requests (shadow.py) and is never chosen.

The daemon reads these objects for status (`counters_snapshot()`, in-flight
counts); only the gateway mutates them. Counters (APIMetrics, Monitor in
metrics.py) are plain ints: the gateway runs on one event loop thread, so no
locks are needed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from cortexd.core.health import HEALTHY, ReplicaHealth
from cortexd.core.splitting import pick_target, split_table
from cortexd.gateway.client_connection import ClientConnection, stop_connections
from cortexd.gateway.metrics import APIMetrics, Monitor
from cortexd.spec.model import APISpec, MonitoringSpec, SplitterSpec


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


class ReplicaAddress(NamedTuple):
    """Where the gateway reaches a replica (Gateway.set_replicas takes these, or the first three
    as a plain tuple)."""

    replica_id: str
    host: str
    port: int
    # a unix socket the replica serves on beside host:port, which the gateway then uses (a process
    # replica's: cortexd/backends/replica_files.gateway_socket); "" for none
    socket: str = ""


# what Gateway.set_replicas takes
Replicas = Sequence[ReplicaAddress | tuple[str, str, int]]


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
    socket: str = field(default="", kw_only=True)  # ReplicaAddress.socket

    @property
    def address(self) -> ReplicaAddress:
        return ReplicaAddress(self.replica_id, self.host, self.port, self.socket)

    @property
    def load(self) -> int:
        """The requests on the replica that routing and admission compare: `in_flight` here, every
        gateway worker's with gateway workers (shared_counts.SharedTarget)."""
        return self.in_flight


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


@dataclass(frozen=True)
class SplitConfig:
    """One traffic splitter as the daemon wants it served: Gateway.configure() takes them."""

    name: str
    endpoint: str
    port: int
    targets: tuple[tuple[str, int, bool], ...]  # (api, weight, shadow)

    @classmethod
    def of(cls, spec: SplitterSpec) -> SplitConfig:
        return cls(spec.name, spec.networking.endpoint, spec.networking.local_port,
                   tuple((t.name, t.weight, t.shadow) for t in spec.targets))


def down_reason(route: APIRoute | None) -> str | None:
    """Why an api takes no traffic from a splitter now, or None when it does."""
    if route is None:
        return "is not deployed"
    if route.error is not None:
        return "is in error"
    if route.waiting_for is not None and not route.replicas:
        return f"is waiting for {route.waiting_for}"
    return None


class SplitTarget:
    """One api of a splitter: its weight, its route (None: not deployed), what went to it."""

    __slots__ = ("down", "dropped", "metrics", "name", "route", "shadow", "weight")

    def __init__(self, name: str, weight: int, shadow: bool):
        self.name = name
        self.weight = weight
        self.shadow = shadow
        self.route: APIRoute | None = None
        self.down: str | None = "is not deployed"
        self.metrics = APIMetrics()  # the requests the splitter sent it (copies, for a shadow)
        self.dropped = 0  # shadow copies not sent: the shadow was down or at its concurrency limit


class SplitRoute:
    """A traffic splitter's endpoint; `choose()` is the per-request decision."""

    __slots__ = ("cumulative", "endpoint", "live", "name", "port", "refused", "rng", "shadow", "shares",
                 "targets", "total")

    def __init__(self, config: SplitConfig, rng: Callable[[], float] = random.random):
        self.name = config.name
        self.rng = rng  # uniform in [0, 1); tests seed one
        self.refused = 0  # requests answered 503: no api could take them
        self.targets: tuple[SplitTarget, ...] = ()
        self.shadow: SplitTarget | None = None
        self.live: tuple[SplitTarget, ...] = ()
        self.cumulative: tuple[float, ...] = ()
        self.total = 0
        self.shares: dict[str, float] = {}
        self.configure(config)

    def configure(self, config: SplitConfig) -> None:
        """Take a new configuration; targets that stay keep their counters (call refresh() next)."""
        self.endpoint, self.port = config.endpoint, config.port
        old = {t.name: t for t in self.targets}
        targets = []
        for name, weight, shadow in config.targets:
            target = old.get(name)
            if target is None or target.shadow != shadow:
                target = SplitTarget(name, weight, shadow)
            target.weight = weight
            targets.append(target)
        self.targets = tuple(targets)
        self.shadow = next((t for t in targets if t.shadow), None)

    def refresh(self, routes: Mapping[str, APIRoute]) -> None:
        """Re-read which targets are live and make the choice table (between two requests)."""
        for target in self.targets:
            target.route = routes.get(target.name)
            target.down = down_reason(target.route)
        primaries = [t for t in self.targets if not t.shadow]
        table = split_table([t.weight for t in primaries], [t.down is not None for t in primaries])
        self.live = tuple(primaries[i] for i in table.live)
        self.cumulative, self.total = table.cumulative, table.total
        self.shares = {t.name: share for t, share in zip(primaries, table.shares)}

    def choose(self) -> SplitTarget | None:
        """The target for the next request (None: no api can take it)."""
        live = self.live
        if not live:
            return None
        return live[pick_target(self.cumulative, self.total, self.rng())]

    def names(self) -> set[str]:
        return {t.name for t in self.targets}

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Counters for the status snapshot: per target, and the requests no api could take."""
        now = time.monotonic() if now is None else now
        return {
            "refused": self.refused,
            "targets": {t.name: {"down": t.down, "share": self.shares.get(t.name, 0.0), "dropped": t.dropped,
                                 "requests": t.metrics.summary(now)} for t in self.targets},
        }

    def __repr__(self) -> str:
        return (f"SplitRoute({self.name!r}, endpoint={self.endpoint!r}, port={self.port}, "
                f"live={[t.name for t in self.live]})")


def refresh_all(splits: Sequence[SplitRoute], routes: Mapping[str, APIRoute], api: str | None = None) -> None:
    """Refresh the splitters that route to `api` (all of them when None)."""
    for split in splits:
        if api is None or api in split.names():
            split.refresh(routes)


# a BatchAPI's job requests: (method, query string without '?', body) -> (status, JSON answer)
JobHandler = Callable[[str, str, bytes], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(eq=False)
class JobRoute:
    """A BatchAPI's endpoint: its job requests (submit, status, stop) are answered by the daemon's
    job runner through `handler`; no replica serves them."""

    name: str
    endpoint: str
    port: int
    handler: JobHandler


Route = APIRoute | SplitRoute | JobRoute  # what a port table maps a path to


def release_target(route: APIRoute, target: ReplicaTarget) -> None:
    """A request on `target` ended: a replica removed meanwhile closes once its last one has."""
    target.in_flight -= 1
    if target.removed and target.in_flight == 0:
        if route.draining.get(target.replica_id) is target:
            del route.draining[target.replica_id]
        target.pool.close()


class Closable(Protocol):
    def close(self) -> None: ...


class Listener:
    """One listening port: its server, its client connections and the route table it serves."""

    def __init__(self, port: int):
        self.port = port
        self.table: dict[str, Route] = {}
        self.endpoints: list[str] = []  # "/<endpoint>" of each API served here, for 404 answers
        self.connections: set[ClientConnection] = set()  # open now (client_connection.py)
        # what accepts its connections: an asyncio server, or one Acceptor per address of the host
        # (handoff.py; none in a gateway worker, whose connections are handed over)
        self.servers: list[Closable] = []

    def serve(self, routes: Sequence[Route]) -> None:
        """Serve `routes` from now on (the APIs and splitters configured on this port)."""
        self.table = port_table(routes)
        self.endpoints = sorted("/" + r.endpoint.strip("/") for r in routes)

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let running requests finish (up to `timeout`), close connections."""
        self.close()
        await stop_connections(self.connections, timeout)

    def close(self) -> None:
        """No new connections from now on."""
        for server in self.servers:
            server.close()


def port_table(routes: Sequence[Route]) -> dict[str, Route]:
    """Request path -> route for the APIs and splitters served on one port.

    `/<endpoint>` and `/<endpoint>/` route to the API; an API (or splitter) alone on its
    port is also served at `/` (Cortex local-mode compatibility).
    """
    table: dict[str, Route] = {}
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
