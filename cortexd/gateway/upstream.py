"""Keep-alive HTTP/1.1 connections from the gateway to one replica, pooled.

This is the gateway's client side (cortexd/gateway/request_path.py is the server side).
It exists because aiohttp.ClientSession measured at 0.34x of a replica's direct
throughput when used as a forwarder (2 cores, wrk, a no-op replica; docs/architecture.md,
"The gateway's hot path"): per request it builds a ClientRequest/ClientResponse, a
timer context and header multidicts. Here a request goes out as the bytes the request
path assembled (relay.py), and the response is framed by httptools.HttpResponseParser
(llhttp, the parser aiohttp itself builds on), which handles Content-Length, chunked
and read-until-close bodies.

One UpstreamConnection carries one request at a time. Its life per request:
the request path writes the request (`write`, `drain`), waits for the response head
(`wait_head`, bounded by the upstream timeout), then takes the body either at
once when it is already complete (`take_body`, the common small-response case)
or piece by piece (`read_body`). Reading pauses when more than HIGH_WATER bytes
are buffered, so a fast replica cannot fill memory behind a slow client.

Failures are reported as exception classes the request path maps to statuses:
UpstreamConnectError (nothing was sent: safe to retry elsewhere),
UpstreamDisconnected (502; its subclass UpstreamNotDelivered: the replica provably
never read the request, safe to retry elsewhere too) and UpstreamTimeout (504);
UpstreamNoSocket is the gateway's own shortage of descriptors (503), never the replica's.
Connections are counted in the gateway's SocketCount (admission.py), with its clients'.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from cortexd.gateway.admission import SocketCount

HIGH_WATER = 512 * 1024  # buffered response bytes at which reading pauses
IDLE_TIMEOUT = 30.0  # pooled connections idle longer than this are not reused
# idle connections kept per replica: as many as requests Cortex lets a replica have at once by
# default (max_replica_concurrency 1024), so that a steady load above 64 concurrent requests, the
# earlier bound, no longer closes and reopens connections (at 256 clients on one replica that
# doubled the gateway's CPU per request); those idle past IDLE_TIMEOUT are closed as the pool is
# used, and all idle ones go first when the gateway's sockets reach their cap (admission.SocketCount)
MAX_IDLE = 1024


class UpstreamError(Exception):
    """The exchange with a replica failed; str() says how."""


class UpstreamConnectError(UpstreamError):
    """No connection could be opened: the request was not sent (retrying is safe).

    str() names the replica's address (for the log); `reason` does not (for a client).
    """

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class UpstreamDisconnected(UpstreamError):
    """The replica closed or broke the connection before the response was complete."""


class UpstreamNotDelivered(UpstreamDisconnected):
    """The connection closed before any response byte, and provably before the replica read
    the whole request: retrying it elsewhere cannot run a prediction twice.

    What proves it (TCP on Linux): the peer had closed the connection before the request
    was written (its FIN was seen first), or it reset the connection (RST) rather than
    closing it, which a peer does when it closes with request bytes it never read, or when
    the bytes reach a socket already closed. A replica killed while it ran our request had
    read it all and closes with a FIN: that one is not retried. docker-proxy accepting for
    a container that is gone closes without reading: a reset.
    """


class UpstreamTimeout(UpstreamError):
    """The replica did not answer within the upstream timeout."""


class UpstreamNoSocket(UpstreamError):
    """No connection was opened for want of a descriptor: the gateway's sockets are at their
    cap, or the process at its open-file limit. Nothing was sent, and the replica is not to blame."""


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a replica; one request at a time."""

    def __init__(self, pool: UpstreamPool):
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.counted = False  # in the gateway's socket count (pool.sockets)
        self.peer_closed = False  # the replica's end of the connection closed (EOF seen)
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        # one timer per connection, re-armed lazily (see _wait): a request's wait for its
        # answer then costs no timer of its own
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        """Clear the per-response state before a request goes out."""
        self.active = False  # a request is in progress on this connection
        self.head_only = False  # the request was HEAD: the response has no body
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.answered = False  # a byte of the response arrived
        self.keep_alive = True
        self.error: UpstreamError | None = None
        self._informational = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._read_paused = False
        self._waiter: asyncio.Future | None = None
        # what is told instead, when no coroutine waits (`listen`: the request path's fast lane)
        self._listener: Callable[[UpstreamConnection], None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True
        sockets = self.pool.sockets
        if sockets is not None:
            sockets.open += 1
            self.counted = True

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None  # set by connection_made(), before any of the callbacks
        if not self.active or self.complete:
            # bytes nobody asked for (e.g. after a HEAD response): the framing is unknown now
            self.keep_alive = False
            self.transport.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamDisconnected("the replica switched protocols, which the gateway does not proxy"))
            self.transport.close()
        except httptools.HttpParserError as e:
            self._fail(UpstreamDisconnected(f"the replica sent a malformed HTTP response ({e})"))
            self.transport.close()
        if self._listener is not None:  # last: the listener may begin the next exchange on this connection
            self._notify()

    def eof_received(self) -> bool:
        self.peer_closed = True
        if not self.active or not self.answered:
            # the replica closed without answering (idle, or died mid-request): its other idle
            # connections are suspect too (UpstreamPool.drop_idle); this one is never handed out
            self.pool.forget(self)
            self.pool.drop_idle()
        if not self.active:
            pass
        elif not self.answered and self._reset_by_peer():
            # our request reached a socket the replica had closed: it was never read
            self._fail(UpstreamNotDelivered(
                "the replica had closed the connection; the request was not delivered"))
        elif self.head_done and not self.complete and not self._framed():
            self.on_message_complete()  # a body delimited by the end of the connection
        self.keep_alive = False
        if self._listener is not None:
            self._notify()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        self.keep_alive = False
        pool = self.pool
        pool.forget(self)
        self.uncount()
        if self.active and not self.complete:
            if not self.answered:
                self.pool.drop_idle()  # as in eof_received: the others may be dead too
            if (not self.answered and not self.peer_closed
                    and isinstance(exc, (ConnectionResetError, BrokenPipeError))):
                # a reset, not a close: the replica's end closed with our request unread
                self._fail(UpstreamNotDelivered(
                    f"the replica reset the connection before reading the request ({exc})"))
            elif exc is None:
                self._fail(UpstreamDisconnected("the replica closed the connection before the response was complete"))
            else:
                self._fail(UpstreamDisconnected(f"the connection to the replica broke ({exc})"))
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self.answered = True
        if self.complete:
            self.keep_alive = False  # a second response nobody asked for: never reuse

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue / 103 Early Hints: not the response; the real one follows
            self._informational = True
            self.headers = []
            return
        self.status = status
        self.head_done = True
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)  # the replica answered: stop sending the body
        if self.head_only:
            # llhttp cannot know the request was HEAD and would wait for a body:
            # finish here, and never reuse the connection (its framing is now unknown)
            self.keep_alive = False
            self.on_message_complete()
            return
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.complete:
            return
        self.complete = True
        if self.keep_alive:
            self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- used by the request path (request_path.py, relay.py) ---------------------

    def begin(self, head_only: bool = False) -> None:
        """Start a new exchange on this (fresh or pooled) connection."""
        self._reset()
        self.active = True
        self.head_only = head_only

    def write(self, data: bytes) -> None:
        if self.head_done:
            # the replica answered before taking the whole body (e.g. its own 413): the
            # answer stands, the rest of the body is dropped, the connection is not reused
            self.keep_alive = False
            if not self.open:
                return
        elif not self.open or self.peer_closed:
            if self.error is None and self.peer_closed and not self.answered:
                # the replica's end closed first: whatever it read, it never got this request
                self.error = UpstreamNotDelivered(
                    "the replica had closed the connection; the request was not delivered")
            raise self.error or UpstreamDisconnected(
                "the connection to the replica closed while the request was sent")
        assert self.transport is not None  # open: connected
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the replica is slower to read than the client is to send."""
        if self._write_paused and self.open and not self.head_done:
            fut = self._drain_waiter = self.loop.create_future()
            timer = self.loop.call_later(timeout, self._on_timeout, fut, timeout)
            try:
                await fut
            finally:
                timer.cancel()
                self._drain_waiter = None
        if not self.open and not self.head_done:
            raise self.error or UpstreamDisconnected(
                "the connection to the replica closed while the request was sent")

    def listen(self, listener: Callable[[UpstreamConnection], None], timeout: float) -> None:
        """Call `listener(self)` once, when the response's head has come (perhaps all of the
        response: `complete`) or the exchange failed (`error`), instead of a coroutine's waiting:
        the request path's fast lane (request_path.RequestPath.start). Bounded by `timeout`
        as wait_head() is; the listener is called from the protocol's callbacks."""
        self._listener = listener
        self._arm(timeout)

    def unlisten(self) -> None:
        """The listener is no longer called (its request was cancelled)."""
        self._listener = None

    async def wait_head(self, timeout: float) -> None:
        """Wait for the response's status line and headers."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    def take_body(self) -> bytes:
        """All buffered body bytes (the whole body once `complete`)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._read_paused and self.open:
            self._read_paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data

    async def read_body(self, timeout: float) -> bytes:
        """The next piece of the body; b"" once the body is complete."""
        while True:
            if self._chunks:
                return self.take_body()
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    def reusable(self) -> bool:
        return self.open and self.complete and self.keep_alive and self.error is None

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def uncount(self) -> None:
        """Leave the gateway's socket count (at once when shed for room, not when the close completes)."""
        if self.counted:
            self.counted = False
            sockets = self.pool.sockets
            if sockets is not None:
                sockets.open -= 1

    # -- internals ----------------------------------------------------------------

    async def _wait(self, timeout: float) -> None:
        """Wait for the parser's next event, at most `timeout` seconds.

        The deadline is a field; the connection's one timer checks it when it fires and
        re-arms itself for a deadline moved later (the next wait's), so the usual wait
        neither makes nor cancels a timer: a timer armed per wait measured ~1.5 us, a
        noticeable part of the gateway's Python work per request.
        """
        fut = self._waiter = self.loop.create_future()
        self._arm(timeout)
        try:
            await fut
        finally:
            self._waiter = None

    def _arm(self, timeout: float) -> None:
        """The deadline of the wait that begins now (a coroutine's, or a listener's)."""
        loop = self.loop
        self._deadline = deadline = loop.time() + timeout
        self._timeout = timeout
        timer = self._timer
        if timer is None:
            self._timer = loop.call_at(deadline, self._check_deadline)
        elif deadline < timer.when():  # a shorter timeout than the armed one's
            timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        """The connection's timer: time out the wait in progress once its deadline passed."""
        self._timer = None
        fut = self._waiter
        listening = self._listener is not None
        if not self.open or (not listening and (fut is None or fut.done())):
            return  # no wait in progress: the timer lapses until the next wait arms it
        loop = self.loop
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._check_deadline)
        elif listening:
            self.error = UpstreamTimeout(f"the replica did not answer within {self._timeout:g} s")
            self.close()  # a late response would arrive on a connection nobody reads
            self._notify()
        else:
            assert fut is not None
            self._on_timeout(fut, self._timeout)

    def _on_timeout(self, fut: asyncio.Future, timeout: float) -> None:
        if not fut.done():
            self.error = UpstreamTimeout(f"the replica did not answer within {timeout:g} s")
            fut.set_exception(self.error)
            self.close()  # a late response would arrive on a connection nobody reads

    def _notify(self) -> None:
        """Tell the listener, once, that the response's head came or the exchange failed."""
        listener = self._listener
        if listener is not None and (self.head_done or self.error is not None):
            self._listener = None
            listener(self)

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_exception(error)
        if self._listener is not None:
            self._notify()

    def _reset_by_peer(self) -> bool:
        """Whether the replica's end answered our bytes with a reset (SO_ERROR set): they
        reached a socket it had already closed. Asked only when a connection failed."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        except OSError:
            return False

    def _framed(self) -> bool:
        """Whether the response declared its length (Content-Length or chunked)."""
        for name, _ in self.headers:
            lname = name.lower()
            if lname == b"content-length" or lname == b"transfer-encoding":
                return True
        return False


class UpstreamPool:
    """Idle keep-alive connections to one replica (most recently used first)."""

    def __init__(self, host: str, port: int, *, socket: str = "", connect_timeout: float = 10.0,
                 loop: asyncio.AbstractEventLoop | None = None, sockets: SocketCount | None = None):
        """`socket`: a unix socket the replica serves on too, used instead of host:port. A request
        it never read is proven as on TCP: Linux resets the peer of a unix socket closed with
        bytes unread (replica_files.gateway_socket)."""
        self.host = host
        self.port = port
        self.socket = socket
        self.where = socket or f"{host}:{port}"  # for messages
        self.connect_timeout = connect_timeout
        self.sockets = sockets  # the gateway's count of its sockets, with their cap
        self.loop = loop or asyncio.get_running_loop()
        self._idle: list[UpstreamConnection] = []  # oldest first: taken and returned at the end
        self.closed = False
        if sockets is not None:
            sockets.pools.add(self)

    def take_idle(self) -> UpstreamConnection | None:
        """A pooled live connection, if one is idle (no coroutine: this is the hot path)."""
        idle = self._idle
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if conn.open and now - conn.idle_since < IDLE_TIMEOUT:
                    return conn
                conn.close()
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection, bypassing the pool (UpstreamNoSocket when the gateway has no room for one)."""
        sockets = self.sockets
        if sockets is not None and not sockets.has_room():
            raise UpstreamNoSocket(f"{sockets.open} of {sockets.cap} sockets open, none of the clients' idle")
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = None
                if self.socket:
                    try:
                        _, conn = await self.loop.create_unix_connection(lambda: UpstreamConnection(self), self.socket)
                    except BlockingIOError:
                        # the socket's backlog is full (the replica is slow to accept): a unix
                        # connect fails at once (EAGAIN) where TCP's waits in the SYN queue, so
                        # this one goes to the replica's port, which serves the same
                        conn = None
                if conn is None:
                    _, conn = await self.loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port)
        except TimeoutError as e:  # before OSError: TimeoutError is one
            reason = f"no answer within {self.connect_timeout:g} s"
            raise UpstreamConnectError(f"could not connect to {self.where} ({reason})", reason) from e
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):  # the process's or the system's open-file limit
                raise UpstreamNoSocket(f"{os.strerror(e.errno)} ({errno.errorcode[e.errno]}) on a new "
                                       "connection to a replica") from e
            # from errno, not the message: asyncio's names the address ("Connect call failed (...)")
            reason = os.strerror(e.errno) if e.errno else type(e).__name__
            raise UpstreamConnectError(f"could not connect to {self.where} ({reason})", reason) from e
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after its exchange; only a cleanly finished one is kept (and the
        oldest idle one is closed once it has idled IDLE_TIMEOUT: it would not be reused)."""
        idle = self._idle
        if conn.reusable() and not self.closed and len(idle) < MAX_IDLE:
            conn.active = False
            conn.idle_since = now = self.loop.time()
            idle.append(conn)
            if now - idle[0].idle_since >= IDLE_TIMEOUT:
                idle.pop(0).close()
        else:
            conn.close()

    def shed_idle(self, count: int) -> int:
        """Close up to `count` idle connections, the oldest first (the gateway is short of sockets)."""
        idle = self._idle
        shed, self._idle = idle[:count], idle[count:]
        for conn in shed:
            conn.uncount()
            conn.close()
        return len(shed)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: drop it if it sat idle."""
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def drop_idle(self) -> None:
        """Close the idle connections, keep pooling: after a connection to the replica broke
        with no answer, the others may be dead too without our knowing yet, and a request
        written on one of those could not be told apart from one the replica read. A fresh
        connection fails provably (refused, or reset unread) if the replica is gone."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
