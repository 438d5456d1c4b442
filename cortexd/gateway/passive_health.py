"""Passive health in the gateway: failure streaks take a replica out of rotation, a timer brings it back.

The request path (request_path.py) reports each failed exchange here; `core.health`
decides, from the replica's streak and the policy, whether the replica is ejected for a
while (connection failures, answers dropped) or unhealthy (timeouts in a row: hung). An
ejected replica leaves its API's rotation, its pooled connections close, and a timer
puts it back with a fresh pool; either way the daemon is told (`listener`: the
reconciler reports it, and replaces a hung replica). Only the event loop's thread
touches these objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic
from typing import Protocol

from cortexd.core.health import DROPPED, FAILURE, TIMEOUT, HealthPolicy, after_failure, readmitted
from cortexd.gateway.routes import APIRoute, ReplicaAddress, ReplicaTarget
from cortexd.gateway.upstream import UpstreamDisconnected, UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger(__name__)


class HealthListener(Protocol):
    def __call__(self, api: str, replica_id: str, reason: str | None, *, replace: bool,
                 until: float | None) -> None:
        """A replica left rotation: `replace` when it is hung, else it is back at monotonic `until`."""


class PassiveHealth:
    """Ejects replicas whose exchanges keep failing, and readmits them when their time is up."""

    def __init__(self, policy: HealthPolicy, new_pool: Callable[[ReplicaAddress], UpstreamPool]):
        self.policy = policy
        self.new_pool = new_pool  # a fresh connection pool for a readmitted replica
        self.listener: HealthListener | None = None

    def note_failure(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError) -> None:
        """An exchange with `target` failed with `e`: count it, and eject the replica when its streak says so."""
        before = target.health
        others = sum(1 for t in route.replicas if t is not target)
        if isinstance(e, UpstreamTimeout):
            kind = TIMEOUT
        elif type(e) is UpstreamDisconnected:  # it had the request and closed without an answer
            kind = DROPPED
        else:  # could not connect, or provably never read the request
            kind = FAILURE
        after = after_failure(before, kind, monotonic(), self.policy, others_in_rotation=others)
        target.health = after
        if target.removed:
            return  # already out of rotation (draining)
        if (after.unhealthy is not None and before.unhealthy is None) or \
                (after.ejected_until is not None and after.ejected_until != before.ejected_until):
            self._eject(route, target, e)

    def _eject(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError) -> None:
        health = target.health
        route.replicas = [t for t in route.replicas if t is not target]
        route.ejected[target.replica_id] = target
        target.pool.close()  # its pooled connections are as suspect as the one that failed
        if target.readmit is not None:
            target.readmit.cancel()
            target.readmit = None
        if health.unhealthy is None and health.ejected_until is not None:
            delay = max(0.0, health.ejected_until - monotonic())
            target.readmit = asyncio.get_running_loop().call_later(delay, self._readmit, route, target)
        log.warning("api %r: replica %s out of rotation: %s (last: %s)",
                    route.name, target.replica_id, health.reason, e)
        route.notify_changed()
        listener = self.listener
        if listener is not None:
            listener(route.name, target.replica_id, health.reason,
                     replace=health.unhealthy is not None, until=health.ejected_until)

    def _readmit(self, route: APIRoute, target: ReplicaTarget) -> None:
        target.readmit = None
        if target.removed or route.ejected.get(target.replica_id) is not target:
            return
        del route.ejected[target.replica_id]
        target.health = readmitted(target.health)
        target.pool = self.new_pool(target.address)
        route.replicas = [*route.replicas, target]
        log.info("api %r: replica %s back in rotation", route.name, target.replica_id)
        route.notify_changed()
