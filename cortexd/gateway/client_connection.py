"""One client connection of the gateway: requests framed with httptools, served in order, within limits.

The gateway (proxy.py) listens on each port with `loop.create_server(factory)`, and the
factory makes one ClientConnection, an asyncio.Protocol, per accepted connection. It
frames requests with httptools' HttpRequestParser (llhttp, as upstream.py frames the
replicas' answers), makes one ClientRequest per head (client_request.py) and serves the
requests in order, one at a time, and writes what they are answered (answer_writer.py,
which this class extends). A whole request with nothing serving before it is offered to the
request path's fast lane first (`_dispatch`; fast_lane.py): the usual one is answered from
callbacks (`fast_done`), with no coroutine. Any other is served by a coroutine (`_serve_requests`,
a task while there are requests) that awaits the request path (request_path.py), as is a fast
one the lane hands over (`fast_handover`) and the requests queued behind it.

Clients are not trusted (nginx is the model): a pipelined request is served only once the
client has room for the answers before it (the transport's high-water mark); one request-head timer, armed when the
connection opens and again only when a later head arrives in pieces (408); a head is at
most HEAD_LIMIT bytes, a header line HEADER_LINE_LIMIT, MAX_HEADERS lines (431), a
request line REQUEST_LINE_LIMIT (400); the bytes of unfinished heads count in the
budget every connection shares, and the connection counts in the gateway's sockets
(connections.py, admission.py); HTTP versions other than 1.1 and 1.0 get 505, never an
echo; malformed requests get a JSON 400 that does not echo the client's bytes, logged
quietly through ClientConnections. Idle keep-alive connections close after the
keep-alive timeout, silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import NoReturn, Protocol

import httptools

from cortexd.gateway.admission import HEAD_LIMIT, HEADER_LINE_LIMIT, MAX_HEADERS, REQUEST_LINE_LIMIT
from cortexd.gateway.answer_writer import AnswerWriter
from cortexd.gateway.answers import Answer, error_answer, raw_answer
from cortexd.gateway.client_errors import shown
from cortexd.gateway.client_request import BodyBroken, ClientRequest, origin_form, wake
from cortexd.gateway.connections import ClientConnections
from cortexd.gateway.relay import encode
from cortexd.spec.units import format_bytes

log = logging.getLogger(__name__)


class FastExchange(Protocol):
    """A request begun from callbacks (fast_lane.FastExchange), as its connection sees it."""

    def rest(self) -> Awaitable[Answer | None]: ...
    def cancel(self) -> None: ...


Serve = Callable[[ClientRequest], Awaitable["Answer | None"]]
# the request path's fast lane (fast_lane.py): begins a whole request from callbacks, or says None
Start = Callable[[ClientRequest, "ClientConnection"], "FastExchange | None"]
_VERSIONS = {"1.1": (1, 1), "1.0": (1, 0)}  # request versions the gateway answers in kind
# requests parsed and not answered yet, past which the connection stops reading the client until
# they are answered: a client pipelining without reading its answers holds a bounded queue (and what
# one read held, which the parser finishes)
PIPELINE_LIMIT = 32
# headers a request may carry once (Content-Length: llhttp refuses two), as aiohttp, which the replicas
# run, and the old gateway refused: a bit each, for a mask per head
_SINGLE = {name: 1 << i for i, name in enumerate((b"host", b"content-type", b"transfer-encoding", b"user-agent",
                                                   b"content-location", b"content-range", b"etag", b"max-forwards",
                                                   b"server"))}
_SINGLE_LENGTHS = frozenset(len(name) for name in _SINGLE)
_TRANSFER_ENCODING = _SINGLE[b"transfer-encoding"]
HEAD_TOO_LARGE = (f"the request head is larger than the gateway allows ({HEAD_LIMIT // 1024} KiB in all, "
                  f"{HEADER_LINE_LIMIT // 1024} KiB per header line, {MAX_HEADERS} header lines); "
                  "send fewer or smaller headers")


class _Refused(Exception):
    """Raised from a parser callback: the head is refused with `status` (httptools wraps it)."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class ClientConnection(AnswerWriter):
    """One client connection: parses requests, serves them in order, keeps the limits."""

    def __init__(self, connections: set[ClientConnection], clients: ClientConnections, serve: Serve,
                 keepalive: float, start: Start | None = None):
        super().__init__(asyncio.get_running_loop(), clients.send_timeout)
        self._connections = connections  # the listener's
        self._clients = clients
        self._serve = serve
        self._start = start
        self._keepalive = keepalive
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._queue: deque[ClientRequest] = deque()  # parsed, not answered yet; the first is being answered
        self._task: asyncio.Task[None] | None = None
        self._fast: FastExchange | None = None  # the first request, being answered from callbacks
        self._undispatched = False  # a request was queued with nothing serving: _dispatch() once parsed
        self._waiter: asyncio.Future[None] | None = None  # the serving coroutine waits for a request
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = self.loop.time()  # when the last answer went out (or it opened)
        self._problem: _Refused | None = None  # what a parser callback refused
        self._reading_paused = False
        # the head being parsed
        self._in_head = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._trailer_lines = 0
        # bytes of the read being parsed that went to messages before the head now parsed, and where
        # that head began in it (-1: in an earlier read), so a head in pieces counts only its own bytes
        self._read_used = 0
        self._head_from = -1
        self._framing = 0  # bytes of the reads in a row that continued a body and brought none of it
        self._length: int | None = None
        self._chunked = False
        self._te = False  # the head has a Transfer-Encoding
        self._singles = 0  # the _SINGLE headers the head has
        self._rid: bytes | None = None  # its first X-Request-Id
        self._current: ClientRequest | None = None  # the request whose body is being parsed
        self._head_bytes = 0  # bytes of an unfinished head, from the reads that did not complete it
        self.held = 0  # what this connection counts in the shared HeldHeads (admission.py)
        self._counted = False  # whether it counts in the shared SocketCount
        self.peer = b"unknown"  # the client's address, as X-Forwarded-For and X-Real-IP say it
        self.forwarded_for = b"for=unknown"  # and as RFC 7239's Forwarded says it
        self.peer_headers = b"X-Forwarded-For: unknown\r\nX-Real-IP: unknown\r\nForwarded: for=unknown"

    # -- asyncio's callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = address = encode(str(peer[0]))
            # RFC 7239: an IPv6 address is bracketed and quoted
            self.forwarded_for = b'for="[' + address + b']"' if b":" in address else b"for=" + address
            self.peer_headers = (b"X-Forwarded-For: " + address + b"\r\nX-Real-IP: " + address
                                 + b"\r\nForwarded: " + self.forwarded_for)
        clients = self._clients
        self._head_timer = self.loop.call_later(clients.header_timeout, self._head_timed_out)
        sockets = clients.sockets
        sockets.open += 1
        self._counted = True
        if sockets.open > sockets.cap:  # idle connections go first, else this one does
            clients.at_socket_cap(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._connections.discard(self)
        for timer in (self._head_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._idle_timer = None
        self._uncount()
        self._parser = None
        self._close = True
        if self._current is not None:
            self._current.fail(BodyBroken("the client closed the connection"))
            self._current = None
        self._wake()

    def eof_received(self) -> bool:
        """The client closed its sending side: requests parsed are still answered, then it closes."""
        if self.lingering or not self._queue:
            return False  # the transport closes
        self._close = True
        if self._current is not None:
            self._current.fail(BodyBroken("the client closed the connection"))
            self._current = None
        return True  # the answers still go out

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.lingering or (self._close and self._current is None and not self._in_head):
            return  # refused, or no request is read any more: dropped unread
        self._read_used = 0
        self._head_from = -1
        body = self._current  # a request whose body this read continues
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close = True  # the request is served without its upgrade; nothing after it is read
            self._parser = None
        except httptools.HttpParserError as e:
            self._parse_failed(e)
        else:
            if self._in_head and self.transport is not None and not self.lingering:
                # a head begun in this read holds only what follows the messages before it (their bodies)
                self._head_piece(len(data) - self._head_from if self._head_from >= 0 else len(data))
            elif body is not None and body is self._current:
                self._body_piece(len(data))
        if self._undispatched:  # once the read is parsed: the request's body may have come with it
            self._dispatch()

    # -- httptools' callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_from = self._read_used
        self._framing = 0
        self._url = b""
        self._headers = []
        self._head_size = 14  # the request line's spaces, version and end, the blank line (then method, url)
        self._length = None
        self._chunked = self._te = False
        self._singles = 0
        self._rid = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > REQUEST_LINE_LIMIT:
            self._refused(400, "request line too long", f"the request is not valid HTTP: the request line is "
                                                         f"longer than {REQUEST_LINE_LIMIT} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a trailer of a chunked body: dropped, as aiohttp did, within the head's limits
            self._trailers(len(name) + len(value) + 4)
            return
        headers = self._headers
        headers.append((name, value))
        n = len(name) + len(value)
        self._head_size += n + 4
        if n + 2 > HEADER_LINE_LIMIT or len(headers) > MAX_HEADERS:
            self._refused(431, "request head too large", HEAD_TOO_LARGE)
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self._length = int(value)  # llhttp checked its digits
        elif size in _SINGLE_LENGTHS:
            lname = name.lower()
            bit = _SINGLE.get(lname, 0)
            if not bit:
                if lname == b"x-request-id" and self._rid is None:  # noted here: no scan for it later
                    self._rid = value
                return
            if self._singles & bit:
                self._refused(400, "repeated header", f"the request is not valid HTTP: it has more than one "
                                                      f"{lname.decode()} header; send one")
            self._singles |= bit
            if bit == _TRANSFER_ENCODING:  # chunked only when it is the last coding (RFC 9112 6.3)
                self._chunked = value.rpartition(b",")[2].strip().lower() == b"chunked"
                self._te = True

    def _trailers(self, n: int) -> None:
        self._head_size += n  # counted from the end of the head
        self._trailer_lines += 1
        if self._head_size > HEAD_LIMIT or self._trailer_lines > MAX_HEADERS:
            self._refused(431, "request trailers too large", "the request body's trailers are larger than the "
                          f"gateway allows ({HEAD_LIMIT // 1024} KiB, {MAX_HEADERS} lines)")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self.held:
            self._clients.held_heads.release(self)
        self._head_bytes = 0
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        head_size = self._head_size + len(method) + len(self._url)
        self._read_used += head_size
        if head_size > HEAD_LIMIT:
            self._refused(431, "request head too large", HEAD_TOO_LARGE)
        version = parser.get_http_version()
        spoken = _VERSIONS.get(version)
        if spoken is None:
            self._refused(505, "unsupported HTTP version", f"HTTP/{version} is not spoken here: send HTTP/1.1 "
                                                           "(or HTTP/1.0)")
        if self._te or self._length:  # what _check_framing looks at: a body
            self._check_framing(parser)
        self._head_size = self._trailer_lines = 0  # what the parser finds next are the body's trailers
        path = self._url.decode("utf-8", "surrogateescape")
        if path[:1] != "/":
            path = self._origin_form(path)
        # RFC 9112 6.1: an HTTP/1.0 message with a Transfer-Encoding closes the connection after it
        keep_alive = parser.should_keep_alive() and not (self._te and spoken < (1, 1))
        request = ClientRequest(self, method.decode("ascii"), path, spoken, self._headers, self._length,
                                self._chunked, keep_alive, self._rid)
        self._current = request
        self._queue.append(request)
        if len(self._queue) > PIPELINE_LIMIT:
            self.pause_reading()
        if self._task is not None:
            self._wake()
        elif self._start is None:
            self._task = self.loop.create_task(self._serve_requests())
        elif self._fast is None:
            self._undispatched = True

    def _origin_form(self, target: str) -> str:
        """The path of an absolute-form target; its authority replaces the Host header (RFC 9112 3.2.2)."""
        try:
            path, authority = origin_form(target)
        except ValueError as e:
            self._refused(400, "bad request target", f"the request is not valid HTTP: {e}")
        if authority is not None:
            self._headers = [(n, v) for n, v in self._headers if n.lower() != b"host"]
            self._headers.append((b"Host", authority.encode("utf-8", "surrogateescape")))
        return path

    def _check_framing(self, parser: httptools.HttpRequestParser) -> None:
        """Refuse, before it is served, a request whose body llhttp would not frame (it says so only after
        on_headers_complete, once the request is queued): a Transfer-Encoding without chunked last
        (RFC 9112 6.3: 400), and an upgrade with a body (llhttp skips the body of an upgrade; the
        gateway upgrades nothing, and would pass the request on with its body lost)."""
        if self._te and not self._chunked:
            self._refused(400, "Transfer-Encoding not chunked", "the request is not valid HTTP: a request's "
                          "Transfer-Encoding must end in chunked; send the body chunked or with a Content-Length")
        if (self._chunked or self._length) and parser.should_upgrade():
            self._refused(400, "Upgrade with a body", "the gateway does not upgrade connections: send the request "
                          "without an Upgrade header")

    def _refused(self, status: int, kind: str, message: str) -> NoReturn:
        """Stop the parser (it raises HttpParserCallbackError); _parse_failed answers `status`."""
        self._problem = problem = _Refused(status, kind, message)
        raise problem

    def on_body(self, body: bytes) -> None:
        self._read_used += len(body)
        if self._current is not None:
            self._current.feed(body)

    def on_message_complete(self) -> None:
        request = self._current
        if request is not None:
            self._current = None
            request.finish()
            if not request.keep_alive:
                self._close = True  # nothing after it is read (llhttp would refuse it anyway)

    # -- serving, in order ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Serve the request first in the queue, nothing serving: from callbacks when the request path
        can (the usual request, whole: fast_lane.py), else on a coroutine."""
        self._undispatched = False
        request = self._queue[0]
        # a client with no room for the answers before it (pause_writing) waits: the coroutine drains first
        if request.complete and self.transport is not None and self._start is not None and not self._write_paused:
            self.started = False
            try:
                self._fast = self._start(request, self)
            except Exception as e:  # a bug in the gateway: said, never a traceback to the client
                self._finished(request, self._internal_error(request, e))
                return
            if self._fast is not None:
                return
        self._task = self.loop.create_task(self._serve_requests())

    def fast_done(self, request: ClientRequest, answer: Answer) -> None:
        """The request being answered from callbacks has its answer (fast_lane.FastExchange)."""
        self._fast = None
        self._finished(request, answer)

    def fast_handover(self, exchange: FastExchange) -> None:
        """The request being answered from callbacks goes on on a coroutine (which takes it over
        when it starts: until then stop() cancels it here)."""
        self._task = self.loop.create_task(self._serve_requests(exchange))

    def _finished(self, request: ClientRequest, answer: Answer | None) -> None:
        """Write the answer of the first request (served from callbacks), and serve the next."""
        if not self._popped(request, answer):
            return
        if self._write_paused:  # no room for it: the coroutine waits for room (within the send timeout),
            self._task = self.loop.create_task(self._serve_requests())  # then serves what came meanwhile
        elif self._queue:
            self._dispatch()

    def _popped(self, request: ClientRequest, answer: Answer | None) -> bool:
        """Write `answer` to the first request and take it off the queue; whether the connection goes on."""
        going_on = self._answered(request, answer)
        queue = self._queue
        queue.popleft()
        if len(queue) == PIPELINE_LIMIT:
            self.resume_reading()  # it stopped for the queue: room again
        return going_on

    async def _serve_requests(self, first: FastExchange | None = None) -> None:
        """Answer the parsed requests one at a time, in order (`first`: the first was begun from
        callbacks), then wait for the next one (with the fast lane: end; the next is dispatched)."""
        queue = self._queue
        try:
            if first is None and self._write_paused:
                await self.drain()
            while True:
                if first is not None:  # taken over from the fast lane
                    self._fast = None
                    request = queue[0]
                    rest: Awaitable[Answer | None] = first.rest()
                    first = None
                else:
                    while not queue:
                        if self._close or self.transport is None or self._start is not None:
                            return
                        self._waiter = self.loop.create_future()
                        await self._waiter
                    request = queue[0]
                    self.started = False
                    rest = self._serve(request)
                try:
                    answer = await rest
                except Exception as e:  # a bug in the gateway: said, never a traceback to the client
                    answer = self._internal_error(request, e)
                if not self._popped(request, answer):
                    return
                if self._write_paused:  # answers the client has not read: the next waits until it has room
                    await self.drain()
        except ConnectionError:  # the client went while its answers waited; connection_lost cleaned up
            pass
        finally:
            self._task = None
            self._waiter = None

    def _answered(self, request: ClientRequest, answer: Answer | None) -> bool:
        """Write `answer` (None: it was streamed) to `request`, still first in the queue; whether the
        connection goes on to the next request."""
        if self.transport is None:
            return False
        # the rest of an unread body is not read into nothing: the connection closes after the answer
        keep_alive = request.keep_alive and request.complete and not self.last_answer()
        if answer is not None:
            keep_alive = keep_alive and not answer.close
            self.write_answer(request, answer, keep_alive)
        elif not self.stream_keep_alive:
            keep_alive = False
        if keep_alive:
            if len(self._queue) == 1:
                self._idle_since = self.loop.time()
                if self._idle_timer is None:
                    self._idle_timer = self.loop.call_at(self._idle_since + self._keepalive, self._idle_due)
            return True
        self._close = True
        if request.complete and not self._in_head:
            self.force_close()
        else:  # the client may still be sending: it gets the answer before the close
            self._stop_parsing()
            self.resume_reading()  # what it sends is read and dropped
            self.linger()
        return False

    def last_answer(self) -> bool:
        """Whether the answer being written is the connection's last: no more requests are read, and
        none parsed waits behind it (the one being answered is still queued while it streams)."""
        return self._close and len(self._queue) <= 1

    def _internal_error(self, request: ClientRequest, e: Exception) -> Answer | None:
        clients = self._clients
        suppressed = clients.errors.admit(f"internal error ({type(e).__name__})", monotonic())
        if suppressed is not None:
            log.error("error handling a request from %s%s", request.remote,
                      f" ({suppressed} more since the last such line)" if suppressed else "", exc_info=e)
        if self.started:  # the answer is under way: only a cut connection says it failed
            self.abort()
            return None
        answer = error_answer(500, "internal error in the gateway; the daemon log has the details",
                              clients.new_request_id())
        answer.force_close()
        return answer

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        wake(waiter)

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if len(self._queue) > PIPELINE_LIMIT and not self._close:
            return  # stopped for the queue of pipelined requests, not only for a body
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def close_after_answers(self) -> None:
        """Read no more requests: the connection closes once those parsed are answered."""
        self._close = True
        if not self._queue:
            self.force_close()

    def stop(self) -> None:
        """Close now, and stop serving (the listener stops; what runs is cancelled)."""
        self._close = True
        self.abort()
        if self._task is not None:
            self._task.cancel()
        fast, self._fast = self._fast, None
        if fast is not None:
            fast.cancel()

    # -- what a connection holds (admission.py) --------------------------------------------------

    def _head_piece(self, n: int) -> None:
        """`n` more bytes of an unfinished head: within HEAD_LIMIT, and within the gateway's budget."""
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._clients.header_timeout, self._head_timed_out)
        self._head_bytes += n
        clients = self._clients
        if self._head_bytes > HEAD_LIMIT:
            clients.client_error("request head too large", f"from {self._peer()}: more than {HEAD_LIMIT} bytes "
                                                           "and not finished")
            self._refuse_or_close(431, HEAD_TOO_LARGE)
            return
        if clients.held_heads.add(self, n):
            clients.shed_held_heads()

    def _body_piece(self, n: int) -> None:
        """A read that continued a body: one that brought none of it (chunk framing, trailers, which
        httptools joins in memory until their line ends) counts, past HEAD_LIMIT in a row the body fails."""
        if self._read_used:
            self._framing = 0
            return
        self._framing += n
        if self._framing > HEAD_LIMIT:
            self._problem = problem = _Refused(431, "request trailers too large", "the request body's chunk "
                                               f"framing or trailers are larger than the gateway allows "
                                               f"({HEAD_LIMIT // 1024} KiB)")
            self._parse_failed(problem)

    def _parse_failed(self, e: Exception) -> None:
        """The parser refused what the client sent: a body's reader is told, a head is answered."""
        problem, self._problem = self._problem, None
        current = self._current
        in_head = self._in_head
        self._stop_parsing()
        if current is not None and not in_head:  # a malformed body, or trailers past the limits
            self._current = None
            self._close = True
            current.fail(BodyBroken(problem.message if problem else f"the request body is not valid HTTP: {e}"))
            return
        if problem is None:
            detail = shown(str(e), 100)
            problem = _Refused(400, type(e).__name__, f"the request is not valid HTTP: {detail}")
        else:
            detail = problem.message
        self._clients.client_error(problem.kind, f"from {self._peer()}: {shown(detail)}")
        self._refuse_or_close(problem.status, problem.message)

    def _stop_parsing(self) -> None:
        """Nothing more is parsed: the parser and what it holds of a head go now."""
        self._parser = None
        self._in_head = False
        self._url = b""
        self._headers = []
        if self.held:
            self._clients.held_heads.release(self)
        self._head_bytes = 0

    def _refuse_or_close(self, status: int, message: str) -> None:
        """Refuse with `status`, or, behind a request being answered, close after the answers before."""
        if self._queue:
            self._close = True
            self._stop_parsing()
        else:
            self.refuse(status, message)

    def _peer(self) -> str:
        return self.peer.decode(errors="replace")

    def idle(self) -> bool:
        """Whether the connection waits for a request and has none of one (keep-alive, or new)."""
        return not self._queue and not self._in_head and not self._head_bytes and not self.lingering \
            and not self._close and self.transport is not None

    def answering(self) -> bool:
        """Whether a request of this connection is being answered, or parsed and waiting to be."""
        return bool(self._queue)

    def idle_since(self) -> float:
        """When the connection's last answer went out (or it opened)."""
        return self._idle_since

    def shed(self) -> None:
        """Close an idle connection to make room, as its keep-alive timeout would."""
        self._uncount()
        self._close = True
        self.force_close()

    def evict(self) -> None:
        """Give up what this connection holds of an unfinished head (the gateway's budget is spent)."""
        clients = self._clients
        clients.held_heads.release(self)
        unfinished = self._head_bytes
        self._head_bytes = 0
        if self._queue:
            self._close = True  # a request is being answered: the connection ends after it
            self._stop_parsing()
        elif self.lingering:
            self.force_close()  # refused and lingering: at once now
        elif unfinished:
            clients.client_error("unfinished request heads over budget", f"from {self._peer()}: "
                                 f"{unfinished} bytes of a head held longest")
            budget = format_bytes(clients.held_heads.budget)
            self.refuse(503, f"the gateway holds too many unfinished request heads ({budget} across connections); "
                             "send the request again, its head in one piece", retry_after=True)
        else:
            self.force_close()

    def refuse(self, status: int, message: str, *, retry_after: bool = False) -> None:
        """Answer `status` with `message` and close, lingering: nothing of this connection is being answered."""
        if self.transport is None or self.lingering:
            return
        self._close = True
        self._stop_parsing()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.write(raw_answer(status, message, self._clients.new_request_id(), retry_after))
        self.resume_reading()
        self.linger()

    def _uncount(self) -> None:
        clients = self._clients
        if self.held:
            clients.held_heads.release(self)
        if self._counted:
            self._counted = False
            clients.sockets.open -= 1

    # -- timers -------------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport is None or self.lingering:
            return
        if self._queue:  # a pipelined head trickles in behind a request being answered: no more after that one
            self._close = True
            self._stop_parsing()
            return
        timeout = self._clients.header_timeout
        self._clients.client_error("request head timeout", f"from {self._peer()}: the request head did not "
                                                           f"arrive within {timeout:g} s")
        self.refuse(408, f"the request head did not arrive within {timeout:g} s (the gateway's client "
                         "header timeout)")

    def send_timed_out(self) -> None:
        if self.transport is not None:
            self._clients.client_error("send timeout", f"from {self._peer()}: took nothing of its answer for "
                                                       f"{self.send_timeout:g} s")
        super().send_timed_out()

    def _idle_due(self) -> None:
        """The keep-alive timeout: an idle connection closes silently (it is checked, not re-armed per request)."""
        self._idle_timer = None
        if not self.idle():
            return  # a request is on its way or answered: the timer is armed again after its answer
        due = self._idle_since + self._keepalive
        if self.loop.time() >= due - 0.001:
            self.shed()
        else:
            self._idle_timer = self.loop.call_at(due, self._idle_due)


async def stop_connections(connections: set[ClientConnection], timeout: float) -> None:
    """Close the idle connections now, let those answering finish (up to `timeout`), then close the rest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for conn in list(connections):
        if conn.answering():
            conn.close_after_answers()
        else:
            conn.shed()
    # polled: a listener that stops is rare, and no event says "the last answer went out"
    while any(conn.answering() for conn in connections) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    for conn in list(connections):
        conn.stop()
