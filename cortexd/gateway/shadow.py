"""Shadow traffic: a copy of a splitter's request to its shadow api, sent beside it, never waited for.

A traffic splitter's api marked `shadow: true` gets a copy of `weight` percent of the
splitter's requests (Cortex 0.32's shadow; Istio's mirror). The copy is a task of its own
(fire and forget): the request path hands it over before forwarding the original and never
awaits it, so the shadow's latency, errors or death never slow or fail the answer the client
gets. Its answer is read and discarded; its status and latency are counted in the splitter's
counters for the shadow (and in the shadow api's own, as any request it served).

Bounded: a copy is sent only when a ready replica of the shadow has room under its
max_replica_concurrency right now; otherwise it is dropped and counted (`SplitTarget.dropped`),
never queued. Copies hold no client slot and do not count as the gateway's in-flight
requests (a shutdown cancels them instead of waiting); they do count on the shadow's
replicas and route, so its autoscaling sees them. Bodies that stream (past the request
buffer) are not copied. The shadow's passive health is its own requests' business: a
failed copy is counted, not held against the replica.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from cortexd.core.routing import pick_replica
from cortexd.gateway.client_request import ClientRequest
from cortexd.gateway.relay import request_head, send_whole_body
from cortexd.gateway.routes import APIRoute, ReplicaTarget, SplitRoute, SplitTarget, release_target
from cortexd.gateway.upstream import UpstreamConnection, UpstreamError, UpstreamTimeout


class ShadowCopies:
    """The copies in flight to shadow apis, as tasks the gateway can cancel at close."""

    def __init__(self, upstream_timeout: float):
        self.upstream_timeout = upstream_timeout
        self.tasks: set[asyncio.Task[None]] = set()

    def copy(self, split: SplitRoute, shadow: SplitTarget, request: ClientRequest, query: str, rid: str,
             body: bytes | None) -> None:
        """Send a copy of `request` to `shadow` if it takes one now (its weight: the percent copied)."""
        if shadow.weight < 100 and split.rng() * 100 >= shadow.weight:
            return
        route = shadow.route
        if route is None or shadow.down is not None or not route.replicas:
            shadow.dropped += 1
            return
        replicas = route.replicas
        i = pick_replica([t.load for t in replicas], route.max_replica_concurrency, route.rr)
        if i is None:  # at its limit: the copy is dropped, never queued
            shadow.dropped += 1
            return
        route.rr += 1
        target = replicas[i]
        head = request_head(request, target.host, target.port, query, rid, body, False)
        target.in_flight += 1
        route.in_flight += 1
        task = asyncio.ensure_future(self._send(shadow, route, target, head, body, request.method == "HEAD"))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, shadow: SplitTarget, route: APIRoute, target: ReplicaTarget, head: bytes,
                    body: bytes | None, head_only: bool) -> None:
        started = monotonic()
        status = 502
        conn: UpstreamConnection | None = None
        pool = target.pool
        try:
            conn = pool.take_idle() or await pool.connect()
            conn.begin(head_only=head_only)
            send_whole_body(conn, head, body)
            await conn.wait_head(self.upstream_timeout)
            while await conn.read_body(self.upstream_timeout):
                pass  # the answer is discarded
            status = conn.status
            pool.release(conn)
            conn = None
        except UpstreamTimeout:
            status = 504
        except UpstreamError:
            status = 502
        finally:
            if conn is not None:  # not handed back: its state is unknown
                conn.close()
            route.in_flight -= 1
            release_target(route, target)
            now = monotonic()
            shadow.metrics.record(status, now - started, now)
            route.metrics.record(status, now - started, now)

    async def close(self) -> None:
        """Cancel the copies still in flight (a shutdown does not wait for shadows)."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
