"""The gateway's book of routes: the APIs the daemon configured and the replicas each one routes to,
and the traffic splitters that route to those APIs.

The daemon drives the gateway (proxy.py Gateway) with the desired APIs and splitters (`update`),
each API's ready replicas (`set_replicas`) and its state while no replica serves
(`set_state`); the gateway forwards those calls here. The book keeps an APIRoute per
API (routes.py) and a ReplicaTarget per replica, each with its connection pool: a
replica left out stops taking requests and drains (its in-flight requests finish, then
its pool closes); a deleted API's route is kept until its last request ends. Whatever
changes an API's routes or state refreshes the splitters that route to it (which of their
apis are live). Requests never look here: they find their route in a listener's port table
(routes.port_table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from cortexd.core.api_status import Failure
from cortexd.errors import UnknownAPI
from cortexd.gateway.answers import client_reason
from cortexd.gateway.routes import (
    APIRoute,
    JobRoute,
    ReplicaAddress,
    Replicas,
    ReplicaTarget,
    Route,
    RouteConfig,
    SplitConfig,
    SplitRoute,
    refresh_all,
)
from cortexd.gateway.upstream import UpstreamPool

if TYPE_CHECKING:
    from cortexd.gateway.shared_counts import WorkerCounts


class RouteBook:
    """The configured APIs' routes by name, and those of deleted APIs whose requests still run."""

    def __init__(self, new_pool: Callable[[ReplicaAddress], UpstreamPool], counts: WorkerCounts | None = None):
        self.new_pool = new_pool  # a connection pool to a replica
        # gateway workers: routes and targets publish their in-flight counts (shared_counts.py)
        self.counts = counts
        self.routes: dict[str, APIRoute] = {}
        self.retired: dict[str, APIRoute] = {}  # deleted APIs whose requests still run
        self.splits: dict[str, SplitRoute] = {}  # the traffic splitters, by name
        self.jobs: dict[str, JobRoute] = {}  # the BatchAPIs' endpoints, by name

    def update(self, desired: Mapping[str, RouteConfig], splits: Mapping[str, SplitConfig] | None = None) -> None:
        """Make `desired` the served APIs (and `splits` the splitters): new ones get a route, kept
        ones keep their replicas and counters, and the routes of APIs no longer desired are retired."""
        for name, api in desired.items():
            route = self.routes.get(name)
            if route is None:
                new_route = APIRoute if self.counts is None else self.counts.new_route
                route = self.routes[name] = new_route(name, api.endpoint, api.port, api.max_replica_concurrency)
            else:
                route.endpoint, route.port = api.endpoint, api.port
                route.max_replica_concurrency = api.max_replica_concurrency
            monitoring = api.monitoring
            if monitoring is None:
                route.set_monitoring(None, None)
            else:
                route.set_monitoring(monitoring.model_type, monitoring.key)
        self.retired = {n: r for n, r in self.retired.items() if r.in_flight and n not in desired}
        for name in [n for n in self.routes if n not in desired]:
            self._retire_api(self.routes.pop(name))
        splits = splits or {}
        self.splits = {name: self._split(config) for name, config in splits.items()}
        refresh_all(list(self.splits.values()), self.routes)

    def _split(self, config: SplitConfig) -> SplitRoute:
        split = self.splits.get(config.name)
        if split is None:
            return SplitRoute(config)
        split.configure(config)  # in place: the port tables keep serving it between two requests
        return split

    def on_port(self, port: int) -> list[Route]:
        routes: list[Route] = [r for r in self.routes.values() if r.port == port]
        return routes + [s for s in self.splits.values() if s.port == port] + [
            j for j in self.jobs.values() if j.port == port]

    def set_replicas(self, api: str, replicas: Replicas) -> None:
        """The ready, routable replicas of `api`: a ReplicaAddress each (see Gateway.set_replicas)."""
        route = self.routes.get(api)
        if route is None:
            return  # not configured (or deleted): nothing routes to it
        ejected = route.ejected  # out of rotation by passive health: they stay out
        current = {t.replica_id: t for t in route.replicas}
        current.update(ejected)
        targets = []
        for address in (ReplicaAddress(*r) for r in replicas):
            replica_id = address.replica_id
            target = current.pop(replica_id, None)
            if target is not None and target.address != address:
                self._retire_replica(route, target)
                target = None
            if target is None:
                back = route.draining.get(replica_id)
                if back is not None and back.address == address:
                    del route.draining[replica_id]  # routable again before it drained
                    back.removed = False
                    target = back
                elif self.counts is None:
                    target = ReplicaTarget(replica_id, address.host, address.port, socket=address.socket,
                                           pool=self.new_pool(address))
                else:
                    target = self.counts.new_target(api, address, self.new_pool(address))
            targets.append(target)
        for target in current.values():
            self._retire_replica(route, target)
        route.replicas = [t for t in targets if ejected.get(t.replica_id) is not t]
        route.notify_changed()
        refresh_all(list(self.splits.values()), self.routes, api)

    def set_state(self, api: str, *, starting: bool, failure: Failure | None = None,
                  waiting_for: str | None = None) -> None:
        """What requests without a ready replica get (see Gateway.set_state)."""
        route = self.routes.get(api)
        if route is None:
            return
        route.starting = starting
        route.error = None if failure is None else client_reason(api, failure)
        route.waiting_for = waiting_for
        route.notify_changed()
        refresh_all(list(self.splits.values()), self.routes, api)

    def find(self, api: str) -> APIRoute | None:
        """The route of `api`, a deleted API's included while its requests run."""
        return self.routes.get(api) or self.retired.get(api)

    def route(self, api: str) -> APIRoute:
        try:
            return self.routes[api]
        except KeyError:
            raise UnknownAPI(f"the gateway serves no api named {api!r}") from None

    def refuse_all(self, why: str) -> None:
        """Requests waiting for a replica get `why` (503) now: none will come (the gateway closes)."""
        for route in self.routes.values():
            route.error = why
            route.notify_changed()

    def targets(self) -> Iterator[ReplicaTarget]:
        """Every replica any route holds: routable, ejected and draining, of deleted APIs too."""
        for route in [*self.routes.values(), *self.retired.values()]:
            yield from (*route.replicas, *route.draining.values(), *route.ejected.values())

    def _retire_replica(self, route: APIRoute, target: ReplicaTarget) -> None:
        target.removed = True
        if route.ejected.get(target.replica_id) is target:
            del route.ejected[target.replica_id]
        if target.readmit is not None:
            target.readmit.cancel()
            target.readmit = None
        if target.in_flight:
            route.draining[target.replica_id] = target
        else:
            target.pool.close()

    def _retire_api(self, route: APIRoute) -> None:
        for target in [*route.replicas, *route.ejected.values()]:
            self._retire_replica(route, target)
        route.replicas = []
        route.starting = False
        route.error = f"api {route.name!r} was deleted"
        route.notify_changed()
        if route.in_flight:
            self.retired[route.name] = route
