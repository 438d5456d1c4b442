"""The replica's HTTP/1.1 server: an asyncio.Protocol framing requests with httptools.

It replaced aiohttp's low-level server under the request path (issue 20.2), which measured
1.27-1.30x bare aiohttp's CPU per request where a protocol of this shape measured 0.50x
(bench/runtime.py; docs/architecture.md, "The runtime's HTTP layer").

Per connection, httptools (llhttp) frames requests; each one becomes a `Request` (method,
path, raw query, raw headers, version) whose body arrives through a `Body` reader as the
bytes come (reading pauses while more than HIGH_WATER bytes wait unread). Requests are
answered one at a time, in order: a pipelined request waits for the answer before it. The
handler, `async handler(request, reply)`, answers once through its `Reply`: `send` (the
whole answer, Content-Length set) or `start` / `write` / `end` (streamed, chunked unless the
headers set a Content-Length). A handler that returns without answering gets a 500.

Malformed requests (a bad request line or header, a line or field past LINE_LIMIT bytes, a
broken chunk) answer `400 Bad Request` and close the connection; each is reported to the
`predictor_runtime.http` logger with its exception, which log_limits.py bounds. The gateway's
rules for slow clients hold here too (client_connection.py): a request head must arrive whole
within the header timeout (HEADER_TIMEOUT, 60 s, unless the server is given another), counted
from the connection's opening or from the head's first byte, else `408 Request Timeout` and
close (a head trickling in behind a request being answered: close after that answer); a body
being read that goes the body timeout (BODY_TIMEOUT, 60 s) without a byte fails its read (the
handler answers 408, then close), never while reading is paused for the handler; an idle
keep-alive connection closes silently after KEEPALIVE_TIMEOUT seconds. One timer per connection
keeps both, re-armed from deadline fields when it fires, never per request. `Expect: 100-continue` is answered
when the request's turn comes. `HTTPServer.shutdown` is the drain: idle connections close at
once, busy ones after their current answer or at the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools

HIGH_WATER = 256 * 1024  # unread body bytes at which reading pauses
LINE_LIMIT = 8190  # bytes in the request target, a header name or a header value (aiohttp's limits)
KEEPALIVE_TIMEOUT = 75.0  # seconds an idle keep-alive connection stays open (aiohttp's and the gateway's)
HEADER_TIMEOUT = 60.0  # seconds a request head may take to arrive (the gateway's client header timeout)
BODY_TIMEOUT = 60.0  # seconds a request body may go without a byte while it is read (the gateway's)
# header lines in one request: the gateway forwards at most its own cap (128) and adds a few;
# without a cap a head of endless short lines would grow without bound
MAX_HEADERS = 256
# requests parsed and not answered yet, past which reading stops until they are answered: a
# client pipelining without reading its answers (the gateway never does) holds a bounded queue
PIPELINE_LIMIT = 32

log = logging.getLogger("predictor_runtime.http")  # log_limits.install bounds what it writes


class LimitExceeded(Exception):
    """A request line or header past LINE_LIMIT bytes (raised inside the parser's callbacks)."""


class HeadTimeout(Exception):
    """A request head that did not arrive whole within the header timeout (answered 408)."""


class BodyError(Exception):
    """The body could not be read: its framing broke, or the client went away (ConnectionResetError)."""


class BodyTimeout(BodyError):
    """Nothing more of a body the server was reading arrived for the body timeout (answered 408)."""


class BodyTooLarge(Exception):
    """More body than the reader's limit arrived."""


class Body:
    """A request body as it arrives: `read()` all of it, or `async for chunk in body.chunks()`."""

    def __init__(self, pause: Callable[[bool], None], length: int | None):
        self._pause = pause  # pause(True) stops reading the socket, pause(False) resumes
        self.length = length
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def waiting(self) -> bool:
        """Nothing of the body arrived yet, and more is announced."""
        return not self._chunks and not self._done

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._pause(True)
        self._wake()

    def end(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
            self._done = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER:
                    self._pause(False)
                yield chunk
                continue
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; BodyTooLarge as soon as more than `limit` bytes arrived."""
        if self._done and self._error is None:  # all here already: the common small body
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            self._pause(False)
        else:
            parts, seen = [], 0
            async for chunk in self.chunks():
                seen += len(chunk)
                if limit is not None and seen > limit:
                    raise BodyTooLarge(limit)
                parts.append(chunk)
            data = b"".join(parts)
        if limit is not None and len(data) > limit:
            raise BodyTooLarge(limit)
        return data


class Request:
    """One request's head, and its body reader."""

    __slots__ = ("body", "keep_alive", "method", "path", "raw_headers", "raw_path", "raw_query", "version")

    def __init__(self, method: str, target: bytes, raw_headers: list[tuple[str, str]],
                 version: str, keep_alive: bool, body: Body):
        path, _, query = target.partition(b"?")
        self.method = method
        self.raw_path = path.decode("latin-1")  # as sent, percent-encoded
        self.path = urllib.parse.unquote(self.raw_path) if "%" in self.raw_path else self.raw_path
        self.raw_query = query.partition(b"#")[0].decode("latin-1")
        self.raw_headers = raw_headers  # (name as sent, value), in order
        self.version = version
        self.keep_alive = keep_alive
        self.body = body

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.raw_headers:
            if key.lower() == name:
                return value
        return None


_date_cache: list[Any] = [0, b""]


def http_date(now: float) -> bytes:
    """The Date header's value, made once per second."""
    second = int(now)
    if _date_cache[0] != second:
        _date_cache[0] = second
        _date_cache[1] = email.utils.formatdate(second, usegmt=True).encode()
    return _date_cache[1]


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n".encode()
    return line


def head_bytes(status: int, headers: list[tuple[str, str]], extra: bytes) -> bytes:
    """The answer's head; ValueError for a header that would break it (a line break in it)."""
    text = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a header name or value of the answer holds a line break")
    return b"%b%bDate: %b\r\n%b\r\n" % (status_line(status), text.encode("latin-1"), http_date(time.time()), extra)


class Reply:
    """How a handler answers its request: once, whole (`send`) or streamed (`start`, `write`, `end`)."""

    def __init__(self, connection: Connection, request: Request):
        self._connection = connection
        self._head_only = request.method == "HEAD"
        self.close_after = not request.keep_alive
        self.started = False
        self.finished = False
        self._chunked = False

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        if self.started:
            raise RuntimeError("the request was already answered")
        extra = b"Content-Length: %d\r\n" % len(body)
        if self.close_after or self._connection.closing:  # closing: said so (a refused body, a timeout)
            extra += b"Connection: close\r\n"
        head = head_bytes(status, headers, extra)  # before `started`: a bad header can still get a 500
        self.started = self.finished = True
        self._connection.write(head + body if not self._head_only else head)

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        if self.started:
            raise RuntimeError("the request was already answered")
        has_length = any(name.lower() == "content-length" for name, _ in headers)
        chunked = not has_length and not self._head_only
        extra = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        if self.close_after or self._connection.closing:
            extra += b"Connection: close\r\n"
        head = head_bytes(status, headers, extra)
        self.started, self._chunked = True, chunked
        self._connection.write(head)

    async def write(self, data: bytes) -> None:
        if not data or self._head_only:
            return
        self._connection.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await self._connection.drain()

    def end(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._chunked:
            self._connection.write(b"0\r\n\r\n")


Handler = Callable[[Request, Reply], Awaitable[None]]


class Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, handler: Handler, connections: set[Connection], header_timeout: float = HEADER_TIMEOUT,
                 body_timeout: float = BODY_TIMEOUT):
        self._handler = handler
        self._connections = connections
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._shortest = min(header_timeout, body_timeout, KEEPALIVE_TIMEOUT)  # the timer's longest sleep
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._target = b""
        self._headers: list[tuple[str, str]] = []
        self._name = b""
        self._reading: Request | None = None  # the request whose body the parser is reading
        self._waiting: collections.deque[Request] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._paused_reading = False
        self._drain: asyncio.Future[None] | None = None
        # one timer per connection (a timer per request costs CPU), armed at the opening and
        # re-armed only when it fires, from these deadline fields (_check_timer)
        self._loop = asyncio.get_running_loop()  # made in the loop's protocol factory
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # the parser is in a request head (from its first byte to its end)
        self._head_since: float | None = None  # loop time the unfinished head began; None: no such head
        # loop time the last answer ended (None: none yet); the connection is idle since then
        # while no request is being answered and no head is on its way (bytes between requests,
        # such as empty lines, do not count)
        self._idle_since: float | None = None
        self._body_since = 0.0  # loop time a body being read last progressed (or reading resumed)
        self.closing = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is no asyncio.Transport
        self._connections.add(self)
        loop = self._loop
        # as the gateway's: the first head's time counts from the opening, not from its first byte
        self._head_since = now = loop.time()
        self._timer = loop.call_at(now + self._shortest, self._check_timer)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(httptools.HttpParserError("connection upgrades are not served"))
        except httptools.HttpParserError as e:
            # an exception raised in a callback (a limit: LimitExceeded) arrives wrapped
            cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else None
            self._refuse(cause if isinstance(cause, LimitExceeded) else e)
        if self._in_head and self._head_since is None:  # a head began in this read and did not end
            self._head_since = self._loop.time()
        elif self._reading is not None:  # a body began or went on in this read and did not end
            self._body_since = self._loop.time()

    def eof_received(self) -> bool | None:
        return None  # close once answered: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self.transport = None
        self.closing = True  # pipelined requests still waiting are not run for nobody
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading is not None:
            self._reading.body.fail(ConnectionResetError("the client went away"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # the writer wakes up and finds the connection gone

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._target += url
        if len(self._target) > LINE_LIMIT:
            raise LimitExceeded(f"the request target is longer than {LINE_LIMIT} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > LINE_LIMIT or len(value) > LINE_LIMIT:
            raise LimitExceeded(f"a header is longer than {LINE_LIMIT} bytes")
        if len(self._headers) >= MAX_HEADERS:
            raise LimitExceeded(f"the request has more than {MAX_HEADERS} header lines")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_since = None
        parser = self._parser
        headers, self._headers = self._headers, []
        target, self._target = self._target, b""
        length = None
        for name, value in headers:
            if name.lower() == "content-length":
                length = int(value) if value.isdigit() else None
                break
        request = Request(parser.get_method().decode("latin-1"), target, headers,
                          parser.get_http_version(), parser.should_keep_alive(),
                          Body(self._pause_reading, length))
        self._reading = request
        self._waiting.append(request)
        if len(self._waiting) > PIPELINE_LIMIT:
            self._pause_reading(True)
        if self._task is None:
            self._next()

    def on_body(self, data: bytes) -> None:
        if self._reading is not None:
            self._reading.body.feed(data)

    def on_message_complete(self) -> None:
        if self._reading is not None:
            self._reading.body.end()
            self._reading = None

    # -- requests, one at a time ---------------------------------------------------------

    def _next(self) -> None:
        if self._waiting and not self.closing:
            self._task = self._loop.create_task(self._serve(self._waiting.popleft()))
            if len(self._waiting) == PIPELINE_LIMIT:
                self._pause_reading(False)  # it stopped for the queue: room again
        else:
            self._task = None
            if self.transport is not None:
                self._idle_since = self._loop.time()

    async def _serve(self, request: Request) -> None:
        if request.body.waiting and request.version == "1.1" and \
                (request.header("Expect") or "").lower() == "100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it to send the body
        reply = Reply(self, request)
        try:
            await self._handler(request, reply)
        except Exception as e:
            log.error("Unhandled exception while answering a request", exc_info=e)
            if not reply.started:
                reply.close_after = True
                reply.send(500, [("Content-Type", "application/json")],
                           b'{"error":"the server failed to answer; see the API\'s logs"}')
        if not reply.started:
            reply.close_after = True
            reply.send(500, [("Content-Type", "application/json")], b'{"error":"no answer was made"}')
        if not reply.finished or reply.close_after or self.closing or self._reading is request:
            # an unfinished stream, a client that asked to close, a broken parser or shutdown,
            # or a body left unread: close
            self.close()
        self._task = None
        self._next()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full; ConnectionResetError once the client is gone."""
        if self._drain is not None:
            await self._drain
        if self.transport is None:
            raise ConnectionResetError("the client went away")

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self) -> None:
        if self._task is None:
            self.close()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The request being answered, if any."""
        return self._task

    def _refuse(self, error: Exception) -> None:
        """A malformed request. The parser cannot go on: the connection closes once answered."""
        log.warning("Error handling request", exc_info=error)
        message = str(error) or type(error).__name__
        self.closing = True
        if self._task is not None:
            if self._reading is not None:
                # the handler reading that body answers (400), then the connection closes
                self._reading.body.fail(BodyError(f"invalid request body: {message}"))
            return
        body = b'{"error":"bad request: %s"}' % message.replace('"', "'").encode("latin-1", "replace")[:200]
        self.write(head_bytes(400, [("Content-Type", "application/json")],
                              b"Content-Length: %d\r\nConnection: close\r\n" % len(body)) + body)
        self.close()

    def _pause_reading(self, pause: bool) -> None:
        if self.transport is None or pause == self._paused_reading:
            return
        if not pause and len(self._waiting) > PIPELINE_LIMIT:
            return  # stopped for the queue of pipelined requests, not only for a body
        self._paused_reading = pause
        if pause:
            self.transport.pause_reading()
        else:
            self._body_since = self._loop.time()  # the wait for the client counts from now
            self.transport.resume_reading()

    def _check_timer(self) -> None:
        """The connection's timer: a head past the header timeout is refused (408), a body that
        has not progressed for the body timeout while it was read (not while reading was paused
        for the handler) fails its read (408 from the handler), an idle keep-alive connection
        past KEEPALIVE_TIMEOUT closes; else it is armed again for the next deadline, and never
        later than the shortest timeout from now, so that a head, a body or an idle spell that
        begins before it fires is never due before it (nothing re-arms it per request)."""
        self._timer = None
        loop = self._loop
        if self.transport is None or self.closing:
            return
        now = loop.time()
        shortest = self._shortest
        due = now + shortest
        reading = self._reading
        if self._head_since is not None:
            due = self._head_since + self._header_timeout
            if now >= due:
                self._head_timed_out()
                return
        elif reading is not None and not self._paused_reading:
            due = self._body_since + self._body_timeout
            if now >= due:  # the handler reading it answers 408, then the connection closes
                self.closing = True
                self._reading = None
                reading.body.fail(BodyTimeout(f"the request body did not arrive within {self._body_timeout:g} s"))
                return
        elif self._idle_since is not None and self._task is None:
            due = self._idle_since + KEEPALIVE_TIMEOUT
            if now >= due:
                self.close()  # silently, as the gateway closes an idle client connection
                return
        self._timer = loop.call_at(min(due, now + shortest), self._check_timer)

    def _head_timed_out(self) -> None:
        self.closing = True
        if self._task is not None:
            return  # a pipelined head trickles in behind a request being answered: that answer is the last
        message = f"the request head did not arrive within {self._header_timeout:g} s"
        log.warning("Error handling request", exc_info=HeadTimeout(message))
        body = b'{"error":"%b"}' % message.encode()
        self.write(head_bytes(408, [("Content-Type", "application/json")],
                              b"Content-Length: %d\r\nConnection: close\r\n" % len(body)) + body)
        self.close()


class HTTPServer:
    """The connections of one listening socket, and their shutdown."""

    def __init__(self, handler: Handler, header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT):
        self.handler = handler
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.connections: set[Connection] = set()

    def protocol(self) -> Connection:
        return Connection(self.handler, self.connections, self.header_timeout, self.body_timeout)

    async def shutdown(self, deadline: float) -> None:
        """Close idle connections now; wait for busy ones until `deadline` (loop time), then close them."""
        loop = asyncio.get_running_loop()
        for connection in list(self.connections):
            connection.closing = True  # no further request on it
            connection.close_if_idle()
        # closing connections start no further request: each busy one's current task is its last
        busy = [c.task for c in self.connections if c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=max(0.0, deadline - loop.time()))
        for connection in list(self.connections):
            connection.close()


class Answer:
    """A whole answer: status, headers (name, value) and body; `close` closes the connection after it."""

    __slots__ = ("body", "close", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes = b"", close: bool = False):
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close

    async def send(self, reply: Reply, extra: list[tuple[str, str]] | None = None) -> None:
        if self.close:
            reply.close_after = True
        reply.send(self.status, self.headers + extra if extra else self.headers, self.body)
