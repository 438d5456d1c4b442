"""The request path's fast lane: the usual request served from callbacks, with no coroutine.

The request path (request_path.py) serves a request with coroutines: the client connection's
(client_connection.py) awaits RequestPath.serve, which awaits the replica's answer. Each
await is a future, a hop through the event loop and a task step, twice per request; on
2 cores that was a fifth of the gateway's CPU per request (bench/proxy_floor.py: the same
proxy with coroutines and with callbacks only). So the usual request goes another way:

    client connection, request whole --> RequestPath.start(): route, replica, idle pooled
        connection, request written            (in the client protocol's data_received)
    replica's answer, whole --> FastExchange.answered(): counted, connection pooled again,
        answer written to the client           (in the replica protocol's data_received)

What is not usual at the start (a splitter, a BatchAPI, a body not whole or chunked, no
replica with room, no idle connection, the gateway closing, any answer the gateway makes
itself) never takes this lane: RequestPath.serve serves it, from the beginning. What turns
unusual on the way (an answer whose body comes after its head, a failed exchange, the
upstream timeout) is handed over to a coroutine at that point (RequestPath.handed_over):
serve's own steps from there on, its retry of an undelivered request included. A request
the listener stops (ClientConnection.stop) is cancelled as serve's coroutine would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cortexd.core.health import after_answer
from cortexd.gateway.answers import Answer
from cortexd.gateway.relay import response_headers
from cortexd.gateway.routes import release_target

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from cortexd.gateway.client_request import ClientRequest
    from cortexd.gateway.routes import APIRoute, ReplicaTarget, SplitTarget
    from cortexd.gateway.upstream import UpstreamConnection


def relayed(target: ReplicaTarget, conn: UpstreamConnection, rid: str) -> Answer:
    """A replica's whole answer (all of it came with its head); its connection goes back to its pool."""
    if target.health.streak:  # it answered: its failure streak ends
        target.health = after_answer(target.health)
    headers, length = response_headers(conn.headers)
    answer = Answer(conn.status, headers, rid, conn.take_body(), relayed=True, head_only=conn.head_only,
                    head_length=length)
    conn.pool.release(conn)
    return answer


class Answering(Protocol):
    """What a fast exchange asks of its client connection (client_connection.ClientConnection)."""

    def fast_done(self, request: ClientRequest, answer: Answer) -> None: ...
    def fast_handover(self, exchange: FastExchange) -> None: ...


class Ending(Protocol):
    """What a fast exchange asks of the request path (request_path.RequestPath)."""

    def done(self, route: APIRoute, via: SplitTarget | None, status: int, resp: Answer | None,
             started: float) -> None: ...
    def handed_over(self, exchange: FastExchange) -> Coroutine[Any, Any, Answer | None]: ...


class FastExchange:
    """One request on the fast lane: sent to a replica, its answer awaited by callback."""

    __slots__ = ("body", "client", "conn", "path", "query", "request", "rid", "route", "started", "target")

    def __init__(self, path: Ending, client: Answering, request: ClientRequest, route: APIRoute,
                 target: ReplicaTarget, conn: UpstreamConnection, query: str, started: float):
        self.path = path
        self.client = client
        self.request = request
        self.route = route
        self.target = target
        self.conn = conn
        self.query = query
        self.started = started
        self.rid = ""
        self.body: bytes | None = None

    def answered(self, conn: UpstreamConnection) -> None:
        """The replica's answer head came (UpstreamConnection.listen), or the exchange failed."""
        if conn.complete and conn.error is None:  # the usual answer: all of it came with its head
            answer = relayed(self.target, conn, self.rid)
            self._ended(answer.status, answer)
            self.client.fast_done(self.request, answer)
        else:
            self.client.fast_handover(self)

    def rest(self) -> Coroutine[Any, Any, Answer | None]:
        """The rest of the exchange on a coroutine (its answer's body comes after its head, or it failed)."""
        return self.path.handed_over(self)

    def cancel(self) -> None:
        """Stop waiting for the answer (the listener stops, or starting failed): as a cancelled coroutine."""
        conn = self.conn
        conn.unlisten()
        if conn.active:  # not handed back to the pool: its state is unknown
            conn.close()
        else:  # nothing was sent on it (starting failed first): back to its pool
            conn.pool.release(conn)
        self._ended(500, None)

    def _ended(self, status: int, answer: Answer | None) -> None:
        route = self.route
        release_target(route, self.target)
        route.in_flight -= 1
        self.path.done(route, None, status, answer, self.started)
