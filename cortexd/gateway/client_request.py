"""One request a client sent the gateway: its head as parsed, and its body as it arrives.

The gateway's client connection (client_connection.py) frames requests with httptools
(llhttp) and makes one ClientRequest per request head; the request path
(request_path.py) and the relay (relay.py) read it. Header bytes are kept as sent, in
order (`raw_headers`), and looked up by scanning them: a request has a few, and most are
never asked for. The body is fed in as the parser finds it; the usual small body is whole
before the request path first looks (it came in the read that completed the head), and
`read_nowait()` takes it without awaiting. A body that comes later is read with
`readany()`; past BODY_HIGH_WATER bytes unread the connection stops reading the socket
(the client is slowed by TCP, the gateway buffers no more) until the reader catches up.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# bytes of a request body buffered unread before the connection stops reading the client
BODY_HIGH_WATER = 256 * 1024


_SCHEMES = ("http://", "https://")


def origin_form(target: str) -> tuple[str, str | None]:
    """A request target as the routes know it (path and query) and, for an absolute-form target
    (`http://host/api?q`, RFC 9112 3.2.2, which a server must accept), its authority, which then
    stands for the Host header; (target, None) for any other form. ValueError: an absolute-form
    target without a host, or of a scheme other than http and https."""
    if target[:1] == "/" or "://" not in target:
        return target, None
    lowered = target[:8].lower()
    scheme = next((s for s in _SCHEMES if lowered.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"the request target {target.partition('://')[0]!r}:// is not http or https")
    rest = target[len(scheme):]
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    if not authority or "@" in authority:  # RFC 9110 4.2.4: no userinfo in an http(s) URI
        raise ValueError("the request target's authority is empty or carries a user name")
    if path[:1] != "/":
        path = "/" + path
    return path, authority


def wake(waiter: asyncio.Future[None] | None) -> None:
    """Let the coroutine waiting on `waiter`, if any, go on."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class BodyBroken(ConnectionError):
    """The request body cannot be read: the client closed or sent a malformed body."""


class Reading(Protocol):
    """What a request and the request path ask of its connection (client_connection.ClientConnection)."""

    peer: bytes  # the client's address, for X-Forwarded-For and X-Real-IP
    forwarded_for: bytes  # and for RFC 7239's Forwarded
    peer_headers: bytes  # all three header lines, for a request that claims none

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def write_continue(self) -> None: ...
    def start_stream(self, request: ClientRequest, status: int, headers: list[tuple[bytes, bytes]], rid: str,
                     length: bytes | None, closing: bool) -> None: ...
    async def send(self, data: bytes) -> None: ...
    def end_stream(self) -> None: ...
    def abort(self) -> None: ...


class ClientRequest:
    """A request head (method, path, version, header bytes) and its body, fed by the connection."""

    __slots__ = ("_chunks", "_error", "_size", "_waiter", "chunked", "complete", "conn", "content_length",
                 "keep_alive", "method", "raw_headers", "raw_path", "request_id", "version")

    def __init__(self, conn: Reading, method: str, raw_path: str, version: tuple[int, int],
                 raw_headers: list[tuple[bytes, bytes]], content_length: int | None, chunked: bool,
                 keep_alive: bool, request_id: bytes | None = None):
        self.conn = conn
        self.method = method
        self.raw_path = raw_path  # path and query as sent (UTF-8, surrogate-escaped)
        self.version = version
        self.raw_headers = raw_headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive  # what the client asked for (HTTP/1.0: `Connection: keep-alive`)
        self.request_id = request_id  # the first X-Request-Id header's value, as sent (None: none)
        self.complete = False  # the whole body has arrived (or there is none)
        self._chunks: list[bytes] = []
        self._size = 0  # bytes in _chunks
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- the head ------------------------------------------------------------------------

    def header(self, lname: bytes) -> bytes | None:
        """The first value of the header named `lname` (lower case), or None."""
        for name, value in self.raw_headers:
            if len(name) == len(lname) and name.lower() == lname:
                return value
        return None

    def header_all(self, lname: bytes) -> list[bytes]:
        """Every value of the header named `lname` (lower case), in order."""
        return [value for name, value in self.raw_headers if len(name) == len(lname) and name.lower() == lname]

    @property
    def body_exists(self) -> bool:
        return self.chunked or bool(self.content_length)

    @property
    def remote(self) -> str:
        """The client's address, for log lines."""
        return self.conn.peer.decode(errors="replace")

    # -- the body, fed by the connection -------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > BODY_HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        """The body will not come whole (the client closed, or sent a malformed body)."""
        if not self.complete:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        wake(waiter)

    # -- the body, read by the request path ------------------------------------------------------

    def is_eof(self) -> bool:
        """Whether the whole body has arrived and nothing of it is unread."""
        return self.complete and not self._chunks

    def read_nowait(self) -> bytes:
        """What has arrived of the body and was not read yet."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        paused = self._size > BODY_HIGH_WATER  # feed() stopped the connection's reading
        self._size = 0
        if paused:
            self.conn.resume_reading()
        return data

    async def readany(self) -> bytes:
        """The next bytes of the body as they come; b"" at its end. Raises BodyBroken."""
        while not self._chunks:
            if self.complete:
                return b""
            if self._error is not None:
                raise BodyBroken(str(self._error))
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self.read_nowait()
