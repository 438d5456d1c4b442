"""The request path: from a client's request on a listening port to a replica's answer and back.

    client request --> serve(): the route      (listener's port table: one dict lookup)
                         | a traffic splitter's: one weighted choice -> that api's route
                         | body up to REQUEST_BUFFER_LIMIT read first (slow clients hold no slot)
                         | replica = least in-flight (core.routing.pick_replica)
                         | _exchange(): request head, body, answer (relay.py: bytes, never parsed)
                         v
                       UpstreamPool of the replica (upstream.py: raw bytes out, httptools in)

The usual request (to an API, whole, a replica with room and an idle pooled connection)
takes the fast lane instead (start(); fast_lane.py): the same steps from callbacks, handed
over to this coroutine's (handed_over()) the moment one turns unusual.

Rules kept here: a request that reached a predictor is never retried (only one that
provably never reached it is, once, elsewhere); bodies are never parsed; every answer,
relayed or not, carries X-Request-Id; the gateway's own answers are JSON
(answers.py) and never carry a replica's log lines. A failed exchange counts toward
the replica's passive health (passive_health.py). Every finished request is counted in
its route's APIMetrics (status, latency; metrics.py), and the bodies of monitored APIs'
2xx answers are queued for the route's Monitor, parsed later, never on the way out. A
request to a traffic splitter is served by the route of the api it chose (routes.SplitRoute)
and counted again in the splitter's counters for that api; a shadow api gets a copy
(shadow.py), sent beside it, never waited for. A BatchAPI's endpoint (routes.JobRoute) is
answered by the daemon's job runner (its body read whole, up to max_body_size).

Clients are not trusted to be quick (nginx is the model): a body up to
REQUEST_BUFFER_LIMIT is read before the request takes a replica slot
(proxy_request_buffering), each body read is bounded by the client body timeout (408),
and bodies are forwarded still encoded (the runtime enforces the body limit on the
decoded size). The gateway (proxy.py) makes one RequestPath and closes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from time import monotonic

from cortexd.core.health import after_answer
from cortexd.core.routing import pick_replica
from cortexd.gateway.answers import Answer, error_answer, json_answer
from cortexd.gateway.client_errors import shown
from cortexd.gateway.client_request import ClientRequest
from cortexd.gateway.connections import ClientConnections
from cortexd.gateway.fast_lane import Answering, FastExchange, relayed
from cortexd.gateway.passive_health import PassiveHealth
from cortexd.gateway.relay import (
    BUFFER_LIMIT,
    BodyTooLarge,
    read_rest,
    request_head,
    response_headers,
    send_streamed_body,
    send_whole_body,
)
from cortexd.gateway.routes import (
    APIRoute,
    JobRoute,
    Listener,
    ReplicaTarget,
    SplitRoute,
    SplitTarget,
    release_target,
)
from cortexd.gateway.shadow import ShadowCopies
from cortexd.gateway.upstream import (
    UpstreamConnectError,
    UpstreamConnection,
    UpstreamError,
    UpstreamNoSocket,
    UpstreamNotDelivered,
    UpstreamPool,
    UpstreamTimeout,
)
from cortexd.spec.units import format_bytes

log = logging.getLogger(__name__)

# Request bodies up to this are read whole before a replica is chosen (nginx's
# proxy_request_buffering): a slow client then holds no replica slot, no in-flight count
# and drives no autoscaling while it uploads. Larger bodies stream through.
REQUEST_BUFFER_LIMIT = 1024 * 1024
# nginx's client_body_timeout: the body may pause no longer than this between reads
CLIENT_BODY_TIMEOUT = 60.0
# a client's X-Request-Id is kept when it is this short and made of these characters;
# anything else (log-line forging, megabyte ids) is replaced by one the gateway makes
_WELL_FORMED_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}").fullmatch


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of a request target: the route's key, and what goes on to the replica ("?..." or "")."""
    q = target.find("?")
    return (target, "") if q < 0 else (target[:q], target[q:])


class _RetryElsewhere(Exception):
    """An exchange failed in a way that provably never reached a predictor, and may be retried."""

    def __init__(self, error: UpstreamError):
        super().__init__(str(error))
        self.error = error


class RequestPath:
    """Serves the requests of every listener: routes, buffers, forwards, relays, counts."""

    def __init__(self, clients: ClientConnections, health: PassiveHealth, *, max_body_size: int,
                 no_replica_wait: float, upstream_timeout: float, client_body_timeout: float,
                 request_buffer_size: int):
        self.clients = clients
        self.health = health
        self.max_body_size = max_body_size
        self.no_replica_wait = no_replica_wait
        self.upstream_timeout = upstream_timeout
        self.client_body_timeout = client_body_timeout
        self.request_buffer_size = request_buffer_size
        self._id_prefix, self._ids = clients.id_prefix, clients.ids  # the request ids it makes
        self.in_flight = 0  # requests being served, all APIs
        self.unrouted = 0  # requests answered 404 (no API at that path)
        self.closing = False  # set by the gateway's close(): answers say `Connection: close`
        self._idle: asyncio.Event | None = None  # set when in-flight drops to 0 while closing
        self.shadows = ShadowCopies(upstream_timeout)  # copies of splitters' requests to their shadow

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in flight (at most `timeout`, or until released); whether none is."""
        if self.in_flight:
            self._idle = self._idle or asyncio.Event()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                return False
        return True

    def release(self) -> None:
        """Stop any wait in drained() at once (a forced shutdown)."""
        if self._idle is None:
            self._idle = asyncio.Event()
        self._idle.set()

    def _request_id(self, request: ClientRequest) -> str:
        """The client's X-Request-Id when it is well formed, else one the gateway makes."""
        given = request.request_id
        if given is not None and _WELL_FORMED_ID(given):
            return given.decode("ascii")
        return f"{self._id_prefix}{next(self._ids):x}"

    async def serve(self, listener: Listener, request: ClientRequest) -> Answer | None:
        """The answer to `request` (None: it was streamed to the client already)."""
        rid = self._request_id(request)
        path, query = split_target(request.raw_path)
        route = listener.table.get(path)
        if route is None:
            return self._not_found(listener, path, rid)
        via: SplitTarget | None = None  # the splitter's target, for a request to a splitter
        split: SplitRoute | None = None
        if isinstance(route, SplitRoute):
            split, via = route, route.choose()
            if via is None or via.route is None:
                return self._no_target(route, rid)
            route = via.route
        elif isinstance(route, JobRoute):
            return await self._job_request(route, request, query, rid)
        self.in_flight += 1
        status = 500
        resp: Answer | None = None
        counted = False
        started = monotonic()
        try:
            if self.closing:
                resp, status = error_answer(503, "the gateway is shutting down", rid), 503
                return resp
            length = request.content_length
            if length is not None and length > self.max_body_size:
                resp, status = self._too_large(rid), 413
                return resp
            # the body first: a request takes a replica slot (in-flight, max_replica_concurrency,
            # autoscaling) only once it is here, unless it is too large to buffer
            body = None if length is None else b""
            streamed = False
            if request.body_exists:
                if request.complete:  # the usual small request: its body came with its head
                    body = request.read_nowait()
                    if length is None and len(body) > self.max_body_size:
                        resp, status = self._too_large(rid), 413
                        return resp
                else:  # it did not come with its head
                    answer, body, streamed = await self._late_body(request, length, rid)
                    if answer is not None:
                        resp, status = answer, answer.status
                        return resp
                    if split is not None and via is not None and (via.down is not None or via.route is not route):
                        via = split.choose()  # its api went (removed, in error) while the body came
                        if via is None or via.route is None:
                            resp, status = self._no_target(split, rid), 503
                            return resp
                        route = via.route
            route.in_flight += 1
            counted = True
            if split is not None and split.shadow is not None and not streamed:
                self.shadows.copy(split, split.shadow, request, query, rid, body)
            resp, status = await self._forward(request, route, query, rid, body, streamed)
            return resp
        finally:
            if counted:
                route.in_flight -= 1
            self.done(route, via, status, resp, started)

    def done(self, route: APIRoute, via: SplitTarget | None, status: int, resp: Answer | None,
             started: float) -> None:
        """A request ended with `status` (`resp` None: streamed, or cancelled): counted, monitored."""
        if self.closing and resp is not None:
            resp.force_close()
        now = monotonic()
        route.metrics.record(status, now - started, now)
        if via is not None:
            via.metrics.record(status, now - started, now)
        monitor = route.monitor
        if monitor is not None and 200 <= status < 300 and resp is not None and resp.relayed \
                and not resp.head_only:
            monitor.offer(resp.body)  # parsed when read, not now
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def start(self, listener: Listener, request: ClientRequest, client: Answering) -> FastExchange | None:
        """Begin the usual request from callbacks (fast_lane.py), or None: serve() serves it.

        The usual request: to an API (not a splitter or a BatchAPI), whole (its body, within
        the limit and not chunked, came with its head), a replica with room and an idle
        pooled connection to it, the gateway not closing. Everything else, and every answer
        the gateway makes itself, goes through serve(); nothing is done before the request
        is taken, so serve() starts afresh on one that is not.
        """
        if self.closing or request.chunked:
            return None
        path, query = split_target(request.raw_path)
        route = listener.table.get(path)
        if not isinstance(route, APIRoute):
            return None
        length = request.content_length
        if length is not None and length > self.max_body_size:
            return None
        replicas = route.replicas
        if len(replicas) == 1:  # the usual single replica: no list of loads to compare
            target = replicas[0]
            if target.load >= route.max_replica_concurrency:
                return None
        elif replicas:
            i = pick_replica([t.load for t in replicas], route.max_replica_concurrency, route.rr)
            if i is None:
                return None
            target = replicas[i]
        else:
            return None
        conn = target.pool.take_idle()
        if conn is None:
            return None
        # taken: from here on it is this request's
        route.rr += 1
        self.in_flight += 1
        route.in_flight += 1
        target.in_flight += 1
        exchange = FastExchange(self, client, request, route, target, conn, query, monotonic())
        try:
            body = request.read_nowait() if length else None if length is None else b""
            exchange.body = body
            rid = exchange.rid = self._request_id(request)
            conn.begin(head_only=request.method == "HEAD")
            send_whole_body(conn, request_head(request, target.host, target.port, query, rid, body, False), body)
            conn.listen(exchange.answered, self.upstream_timeout)
        except BaseException:
            exchange.cancel()
            raise
        return exchange

    async def handed_over(self, exchange: FastExchange) -> Answer | None:
        """The rest of a request begun from callbacks, on a coroutine: its answer's head came with
        only part of its body, or the exchange failed (serve()'s steps from there, retries included)."""
        route = exchange.route
        status = 500
        resp: Answer | None = None
        try:
            resp, status = await self._forward(exchange.request, route, exchange.query, exchange.rid, exchange.body,
                                               False, (exchange.target, exchange.conn))
            return resp
        finally:
            route.in_flight -= 1
            self.done(route, None, status, resp, exchange.started)

    async def _late_body(self, request: ClientRequest, length: int | None,
                         rid: str) -> tuple[Answer | None, bytes | None, bool]:
        """A body that did not come with its head: (answer, what is buffered, whether the rest streams).

        Says `100 Continue` to a client that waits for it. A body larger than the request
        buffer streams from the start; `answer` is set (408, 413, 400) when the body cannot be had.
        """
        expect = request.header(b"expect")
        if expect is not None and request.version >= (1, 1) and expect.lower() == b"100-continue":
            request.conn.write_continue()
        if length is not None and length > self.request_buffer_size:
            return None, b"", True
        answer, body, complete = await self._buffer_body(request, length, rid)
        return answer, body, not complete

    async def _buffer_body(self, request: ClientRequest, length: int | None,
                           rid: str) -> tuple[Answer | None, bytes, bool]:
        """Read a body that did not come with its head: (answer, body, complete).

        At most request_buffer_size bytes (a chunked body can be longer: the rest streams),
        each read waiting at most client_body_timeout; `answer` is set (408, 413, 400) when
        the body cannot be had.
        """
        chunks: list[bytes] = []
        size = 0
        try:
            while size < self.request_buffer_size:
                async with asyncio.timeout(self.client_body_timeout):
                    data = await request.readany()
                if not data:
                    return None, b"".join(chunks), True
                chunks.append(data)
                size += len(data)
                if size > self.max_body_size:
                    return self._too_large(rid), b"", False
        except TimeoutError:
            return self._body_timed_out(request, rid), b"", False
        except OSError as e:  # the client's body broke off (client_request.BodyBroken)
            return error_answer(400, f"the request body could not be read: {shown(str(e), 100)}", rid), b"", False
        return None, b"".join(chunks), request.is_eof()

    async def _forward(self, request: ClientRequest, route: APIRoute, query: str, rid: str,
                       body: bytes | None, streamed: bool,
                       sent: tuple[ReplicaTarget, UpstreamConnection] | None = None) -> tuple[Answer | None, int]:
        """Pick a replica, send the request, relay its answer (`sent`: it went on that replica's
        connection already, from callbacks; its in-flight count is taken)."""
        if sent is not None:
            target, conn = sent
        elif replicas := route.replicas:
            i = pick_replica([t.load for t in replicas], route.max_replica_concurrency, route.rr)
            if i is None:
                return self._at_limit(route, rid), 503
            route.rr += 1
            target = replicas[i]
        else:
            picked = await self._wait_for_replica(route, rid)
            if isinstance(picked, Answer):
                return picked, picked.status
            target = picked
        if sent is None:
            target.in_flight += 1

        # A request that provably never reached a predictor is retried once, elsewhere if
        # possible, on a fresh connection: one whose connection could not be opened, and one
        # whose connection closed or reset before the replica read it (UpstreamNotDelivered;
        # only with its body buffered, so it can be sent again). Never one that reached it.
        # (no coroutine besides _exchange's on the way: the loop turns again only to retry)
        retry = not streamed
        try:
            if sent is None:
                try:
                    conn = target.pool.take_idle() or await target.pool.connect()
                except UpstreamConnectError as first:
                    self.health.note_failure(route, target, first)
                    target = self._switch_target(route, target)
                    retry = False
                    try:
                        conn = await target.pool.connect()
                    except UpstreamConnectError as second:
                        self.health.note_failure(route, target, second)
                        log.warning("api %r: %s; retried elsewhere", route.name, first)
                        return self._unreachable(route, target, second, rid)
            while True:
                try:
                    return await self._exchange(request, route, target, conn, query, rid, body, streamed,
                                                sent is not None)
                except _RetryElsewhere as undelivered:
                    if not retry:
                        return self._failure_answer(route, target, undelivered.error, rid)
                    retry = False
                    sent = None
                    target = self._switch_target(route, target)
                    try:
                        conn = await target.pool.connect()
                    except UpstreamConnectError as second:
                        self.health.note_failure(route, target, second)
                        return self._unreachable(route, target, second, rid)
                except BaseException:
                    if conn.active:  # not handed back to the pool: its state is unknown
                        conn.close()
                    raise
        except UpstreamNoSocket as e:  # the gateway's own shortage: the replica is not to blame
            self.clients.short_of("connections to replicas refused", str(e))
            return error_answer(503, "the gateway is at its connection limit and cannot reach a replica now; "
                                    "try again shortly", rid, retry_after=True), 503
        finally:
            release_target(route, target)

    def _unreachable(self, route: APIRoute, target: ReplicaTarget, e: UpstreamConnectError,
                     rid: str) -> tuple[Answer, int]:
        # the replica's address goes to the log only: a client is never told where replicas listen
        log.warning("api %r: replica %s is unreachable: %s", route.name, target.replica_id, e)
        return error_answer(
            502, f"api {route.name!r}: replica {target.replica_id} is unreachable ({e.reason})", rid), 502

    def _switch_target(self, route: APIRoute, failed: ReplicaTarget) -> ReplicaTarget:
        """Give up `failed` for this request and take another replica (the same if none)."""
        release_target(route, failed)
        target = self._pick_other(route, failed)
        target.in_flight += 1
        return target

    async def _wait_for_replica(self, route: APIRoute, rid: str) -> ReplicaTarget | Answer:
        """Wait (bounded by no_replica_wait) until the API has a ready replica with room."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.no_replica_wait
        while True:
            replicas = route.replicas
            if replicas:
                i = pick_replica([t.load for t in replicas], route.max_replica_concurrency, route.rr)
                if i is None:
                    return self._at_limit(route, rid)
                route.rr += 1
                return replicas[i]
            if route.error is not None:
                return error_answer(503, route.error, rid, retry_after=not self.closing)
            if route.waiting_for is not None:
                return error_answer(503, f"api {route.name!r} is waiting for {route.waiting_for}: no replica can "
                                        f"start until then; see `cortexd get {route.name}`", rid, retry_after=True)
            remaining = deadline - loop.time()
            if remaining <= 0:
                if route.starting:
                    message = f"api {route.name!r} is starting: no replica is ready yet"
                else:
                    message = f"api {route.name!r} has no ready replica"
                return error_answer(503, message, rid, retry_after=True)
            try:
                async with asyncio.timeout(remaining):
                    await route.changed_event().wait()
            except TimeoutError:
                pass

    def _pick_other(self, route: APIRoute, failed: ReplicaTarget) -> ReplicaTarget:
        others = [t for t in route.replicas if t is not failed]
        i = pick_replica([t.load for t in others], route.max_replica_concurrency, route.rr)
        return others[i] if i is not None else failed

    async def _exchange(self, request: ClientRequest, route: APIRoute, target: ReplicaTarget,
                        conn: UpstreamConnection, query: str, rid: str, request_body: bytes | None,
                        streamed: bool, sent: bool = False) -> tuple[Answer | None, int]:
        """Send the request on `conn` (unless `sent` already) and relay the response; never retried
        from here on.

        `request_body` is the whole body (None: the request has none) or, when `streamed`,
        what was read of it so far; the rest then streams from the client. The steps are
        relay.py's; the usual request awaits only the response head.
        """
        pool = conn.pool  # the one `conn` came from (an ejected replica gets a new one)
        if not sent:
            conn.begin(head_only=request.method == "HEAD")
            head = request_head(request, target.host, target.port, query, rid, request_body, streamed)
            try:
                if not streamed:
                    send_whole_body(conn, head, request_body)
                else:
                    assert request_body is not None  # a streamed body: what was read of it (_late_body)
                    await send_streamed_body(conn, request, head, request_body,
                                             upstream_timeout=self.upstream_timeout,
                                             body_timeout=self.client_body_timeout, max_body_size=self.max_body_size)
            except UpstreamError as e:
                return self._upstream_failed(route, target, conn, e, rid)
            except BodyTooLarge:
                conn.close()  # the replica sees an unfinished request and drops it
                return self._too_large(rid), 413
            except TimeoutError:  # before OSError: TimeoutError is one
                conn.close()
                return self._body_timed_out(request, rid), 408
            except OSError as e:  # the client's body broke off (client_request.BodyBroken)
                conn.close()
                return error_answer(400, f"the request body could not be read: {shown(str(e), 100)}", rid), 400

        try:
            await conn.wait_head(self.upstream_timeout)
        except UpstreamError as e:
            return self._upstream_failed(route, target, conn, e, rid)
        if conn.complete:  # the usual answer: all of it came with its head
            answer = relayed(target, conn, rid)
            return answer, answer.status
        if target.health.streak:  # it answered: its failure streak ends
            target.health = after_answer(target.health)
        status = conn.status
        headers, length = response_headers(conn.headers)
        return await self._relay_rest(request, route, target, pool, conn, status, headers, length, rid)

    async def _relay_rest(self, request: ClientRequest, route: APIRoute, target: ReplicaTarget,
                          pool: UpstreamPool, conn: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]],
                          length: bytes | None, rid: str) -> tuple[Answer | None, int]:
        """Relay a response whose body is still coming: whole when small, else streamed."""
        if length is not None and int(length) <= BUFFER_LIMIT:
            try:
                body = await read_rest(conn, self.upstream_timeout)
            except UpstreamError as e:
                return self._upstream_failed(route, target, conn, e, rid)
            pool.release(conn)
            return Answer(status, headers, rid, body, relayed=True), status
        return await self._stream(request, route, target, conn, status, headers, length, rid)

    async def _stream(self, request: ClientRequest, route: APIRoute, target: ReplicaTarget,
                      conn: UpstreamConnection, status: int, headers: list[tuple[bytes, bytes]],
                      length: bytes | None, rid: str) -> tuple[None, int]:
        """Relay a chunked or large response piece by piece, as the replica sends it, as fast
        as the client takes it (each piece waits for room in the client's transport)."""
        client = request.conn
        client.start_stream(request, status, headers, rid, length, self.closing)
        try:
            while data := await conn.read_body(self.upstream_timeout):
                await client.send(data)
        except UpstreamError as e:
            # the status line is out: the only honest signal left is an incomplete response
            log.warning("api %r: replica %s failed mid-response: %s", route.name, target.replica_id, e)
            conn.close()
            client.abort()
            return None, 502
        except ConnectionError:  # the client went away; the rest of the response has no reader
            conn.close()
            return None, status
        client.end_stream()
        target.pool.release(conn)
        return None, status

    def _upstream_failed(self, route: APIRoute, target: ReplicaTarget, conn: UpstreamConnection,
                         e: UpstreamError, rid: str) -> tuple[Answer, int]:
        """502 (or 504 for a timeout) for an exchange that failed before anything was relayed.

        Raises _RetryElsewhere instead when the replica provably never read the request
        (_forward decides whether it can be sent again). Either way the failure counts
        toward the replica's passive health.
        """
        conn.close()
        self.health.note_failure(route, target, e)
        if isinstance(e, UpstreamNotDelivered):
            raise _RetryElsewhere(e)
        return self._failure_answer(route, target, e, rid)

    def _failure_answer(self, route: APIRoute, target: ReplicaTarget, e: UpstreamError,
                        rid: str) -> tuple[Answer, int]:
        if isinstance(e, UpstreamTimeout):
            status, hint = 504, " (the gateway's upstream timeout)"
        else:
            status, hint = 502, ""
        return error_answer(status, f"api {route.name!r}: replica {target.replica_id}: {e}{hint}", rid), status

    async def _job_request(self, route: JobRoute, request: ClientRequest, query: str, rid: str) -> Answer:
        """A BatchAPI's job request (submit, status, stop), answered by the daemon's job runner."""
        length = request.content_length
        if length is not None and length > self.max_body_size:
            return self._too_large(rid)
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await asyncio.wait_for(request.readany(), self.client_body_timeout):
                size += len(chunk)
                if size > self.max_body_size:
                    return self._too_large(rid)
                chunks.append(chunk)
            status, answer = await route.handler(request.method, query.lstrip("?"), b"".join(chunks))
        except TimeoutError:
            return self._body_timed_out(request, rid)
        except ConnectionError:  # client_request.BodyBroken
            return error_answer(400, "the request body could not be read", rid)
        except Exception:  # the job runner's own failure: said, never a traceback to the client
            log.exception("job request to %s failed", route.name)
            return error_answer(500, f"the job request to {route.name!r} failed; see the daemon log", rid)
        return json_answer(status, answer, rid)

    def _not_found(self, listener: Listener, path: str, rid: str) -> Answer:
        """404 for a path no api is served at (counted), naming the endpoints of the port."""
        self.unrouted += 1
        endpoints = listener.endpoints
        served = ", ".join(endpoints) if endpoints else "none"
        resp = error_answer(
            404, f"no api is served at {path} on port {listener.port}; endpoints here: {served}",
            rid, extra={"endpoints": endpoints})
        if self.closing:
            resp.force_close()
        return resp

    def _body_timed_out(self, request: ClientRequest, rid: str) -> Answer:
        """408 and close: the client paused its body longer than client_body_timeout."""
        timeout = self.client_body_timeout
        self.clients.client_error("request body timeout", f"from {request.remote}: no body bytes for {timeout:g} s")
        resp = error_answer(408, f"the request body paused for more than {timeout:g} s (the gateway's "
                                "client body timeout)", rid)
        resp.force_close()  # the rest of the body is not waited for: the connection closes after it
        return resp

    def _too_large(self, rid: str) -> Answer:
        resp = error_answer(
            413, f"the request body is larger than the gateway's limit of {format_bytes(self.max_body_size)}; "
                 "send a smaller payload", rid)
        resp.force_close()  # the unread rest of the body: closing beats reading it to keep the connection
        return resp

    def _no_target(self, split: SplitRoute, rid: str) -> Answer:
        """503: none of the splitter's apis can take requests now (each not deployed or in error)."""
        split.refused += 1
        why = "; ".join(f"api {t.name!r} {t.down}" for t in split.targets if not t.shadow and t.down)
        resp = error_answer(503, f"traffic splitter {split.name!r} has no api that can take requests now"
                                 + (f" ({why})" if why else ""), rid, retry_after=True)
        if self.closing:
            resp.force_close()
        return resp

    def _at_limit(self, route: APIRoute, rid: str) -> Answer:
        n = len(route.replicas)
        return error_answer(
            503, f"api {route.name!r} is at its concurrency limit (max_replica_concurrency="
                 f"{route.max_replica_concurrency} per replica, {n} replica{'s' if n != 1 else ''})",
            rid, retry_after=True)
