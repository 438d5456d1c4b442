"""One exchange with a replica, as bytes: the request head it gets, the body after it, the answer back.

The gateway's request path (cortexd/gateway/request_path.py, RequestPath._exchange) is
these steps in order; this module holds each of them, and none decides anything about
routing, retries or passive health (the request path does):

    request_head()        the client's end-to-end headers, the gateway's framing, X-Request-Id,
                          X-Forwarded-For / X-Real-IP                        (plain function)
    send_whole_body()     the usual case: head and buffered body in one write (plain function)
    send_streamed_body()  a body larger than the request buffer, or chunked past it,
                          streamed from the client as the replica takes it   (coroutine)
    response_headers()    the replica's end-to-end header bytes, kept as sent (plain function)
    read_rest()           the rest of a small response the replica sent in pieces (coroutine)
    BufferedResponse      a whole response written in one piece from those header bytes

The common request (a small body that came with its head, a small answer on a
kept-alive connection) goes through plain functions only: the request path gains no
coroutine and no await over writing the request and waiting for the answer's head.
Header bytes are never decoded into dicts on the way through.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Protocol, cast

from aiohttp import web
from aiohttp.web_request import BaseRequest

from cortexd.gateway.upstream import UpstreamConnection

# The runtime serves predictions at "/" (and at its endpoint); "/" is the one that
# does not depend on the endpoint, so a rename never needs the replica to know.
UPSTREAM_PATH = "/"
# Responses with a Content-Length up to this are buffered whole before answering:
# a replica dying mid-body then yields a clean 502 instead of a truncated 200.
# Larger and chunked responses stream.
BUFFER_LIMIT = 1024 * 1024
# Bodies at least this large go out in a write of their own instead of being joined to their head
_SEPARATE_WRITE = 65536

# hop-by-hop headers (RFC 9110 7.6.1) plus those the gateway sets itself
_REQUEST_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
    b"trailer", b"upgrade", b"proxy-authorization", b"content-length", b"expect",
    b"x-request-id", b"x-forwarded-for", b"x-real-ip", b"forwarded",
})
_RESPONSE_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
    b"trailer", b"upgrade", b"proxy-authenticate", b"content-length", b"x-request-id",
})

STATUS_LINES = {s.value: b"%d %s" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def encode(text: str) -> bytes:
    """Header text as bytes again (aiohttp decodes request lines and headers as UTF-8 with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


# Connection tokens that never make a header hop-by-hop here: the framing words, and Host,
# which the replica needs (a client's `Connection: Host` must not strip it)
_NEVER_HOP = frozenset({b"close", b"keep-alive", b"host"})


class PeerAddress(Protocol):
    """The client's address as the forwarding headers say it: what the gateway server's
    protocol (client_connection.ClientConnection, which imports this module) makes once per
    connection."""

    peer: bytes  # X-Forwarded-For and X-Real-IP
    forwarded_for: bytes  # RFC 7239's Forwarded
    peer_headers: bytes  # all three header lines, for a request that claims none


class BodyTooLarge(Exception):
    """A streamed chunked request body grew past the gateway's limit (answered 413)."""


# -- the request ---------------------------------------------------------------------


def request_head(request: BaseRequest, host: str, port: int, query: str, rid: str,
                 body: bytes | None, streamed: bool) -> bytes:
    """The request head sent to the replica at host:port, ending in the blank line.

    `body` is the whole body (None: the request has none) or, when `streamed`, what was
    read of it so far; a streamed body keeps the client's Content-Length or goes chunked.
    """
    headers = request.headers
    drop = _REQUEST_DROP
    connection = headers.get("Connection")
    if connection:  # headers the client named as hop-by-hop (never Host: the replica needs it)
        named = {encode(t.strip().lower()) for t in connection.split(",")} - _NEVER_HOP
        if named:
            drop = drop | named
    lines = [encode(f"{request.method} {UPSTREAM_PATH}{query} HTTP/1.1")]
    for name, value in request.raw_headers:
        if name.lower() not in drop:
            lines.append(name + b": " + value)
    lines.append(b"X-Request-Id: " + encode(rid))
    # the client's address: appended to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for) and
    # to Forwarded (RFC 7239 `for=`), and as X-Real-IP, replacing what the client claimed
    forwarded_for = headers.getall("X-Forwarded-For", None)
    forwarded = headers.getall("Forwarded", None)
    protocol = cast(PeerAddress, request.protocol)
    if forwarded_for or forwarded:
        peer = protocol.peer
        if forwarded_for:
            peer_for = encode(", ".join(forwarded_for)) + b", " + peer
        else:
            peer_for = peer
        lines.append(b"X-Forwarded-For: " + peer_for)
        lines.append(b"X-Real-IP: " + peer)
        lines.append(b"Forwarded: " + (encode(", ".join(forwarded)) + b", " if forwarded else b"")
                     + protocol.forwarded_for)
    else:
        lines.append(protocol.peer_headers)  # all three, made once per connection
    if request.version < (1, 1) and "Host" not in headers:
        # HTTP/1.0 needs no Host; the HTTP/1.1 the replica is spoken to does
        lines.append(b"Host: %b:%d" % (encode(host), port))
    if streamed:
        length = request.content_length
        if length is not None:
            lines.append(b"Content-Length: %d" % length)
        else:
            lines.append(b"Transfer-Encoding: chunked")
    elif body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def send_whole_body(conn: UpstreamConnection, head: bytes, body: bytes | None) -> None:
    """Write the head and a buffered body: one write, one segment, unless the body is large."""
    if body and len(body) >= _SEPARATE_WRITE:
        conn.write(head)
        conn.write(body)
    else:
        conn.write(head + body if body else head)


async def send_streamed_body(conn: UpstreamConnection, request: BaseRequest, head: bytes, buffered: bytes,
                             *, upstream_timeout: float, body_timeout: float, max_body_size: int) -> None:
    """Write the head, then the body as the client sends it, as fast as the replica takes it.

    A body with a Content-Length goes as sent; a chunked one (of which `buffered` was
    read already) goes chunked, and raises BodyTooLarge past `max_body_size`. Each read
    from the client waits at most `body_timeout` (TimeoutError). Stops early once the
    replica answered.
    """
    content = request.content
    length = request.content_length
    if length is not None:
        conn.write(head)
        sent = 0
        while sent < length and not conn.head_done:  # stop early if the replica answered
            await conn.drain(upstream_timeout)
            async with asyncio.timeout(body_timeout):
                data = await content.readany()
            if not data:
                raise ConnectionError("the request body ended early")
            sent += len(data)
            conn.write(data)
        return
    # chunked and longer than the buffer: what was buffered goes first
    sent = len(buffered)
    conn.write(head + b"%x\r\n%b\r\n" % (sent, buffered))
    while not conn.head_done:
        await conn.drain(upstream_timeout)
        async with asyncio.timeout(body_timeout):
            data = await content.readany()
        if not data:
            conn.write(b"0\r\n\r\n")
            return
        sent += len(data)
        if sent > max_body_size:
            raise BodyTooLarge(sent)
        conn.write(b"%x\r\n%b\r\n" % (len(data), data))


# -- the response --------------------------------------------------------------------


def response_headers(headers: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """(the replica's end-to-end headers, its Content-Length or None): the framing is the gateway's."""
    kept: list[tuple[bytes, bytes]] = []
    length: bytes | None = None
    for name, value in headers:
        lname = name.lower()
        if lname in _RESPONSE_DROP:
            if lname == b"content-length":
                length = value
            continue
        kept.append((name, value))
    return kept, length


async def read_rest(conn: UpstreamConnection, timeout: float) -> bytes:
    """The whole body of a response whose head came before all of its body (raises UpstreamError)."""
    chunks = [conn.take_body()]
    while data := await conn.read_body(timeout):
        chunks.append(data)
    return b"".join(chunks)


class BufferedResponse(web.StreamResponse):
    """A complete proxied response, written in one piece from the replica's raw header bytes.

    web.Response would decode every header into a CIMultiDict, add Date and Server
    and encode them all again; the replica already sent Date and Server, so its
    end-to-end header bytes pass through untouched and only the framing
    (Content-Length, Connection) and X-Request-Id are the gateway's.
    """

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], rid: str, body: bytes,
                 head_only: bool = False, head_length: bytes | None = None):
        super().__init__(status=status)
        self._raw_headers = headers
        self._rid = rid
        self.raw_body = body  # read by the gateway's monitoring (metrics.Monitor)
        self.head_only = head_only  # answering HEAD: no body, the replica's Content-Length
        self._head_length = head_length
        self._written = False

    async def prepare(self, request: BaseRequest):
        writer = request.writer
        if self._written:
            return writer
        self._written = True
        status = self.status
        # force_close() (the gateway is shutting down, a timeout) wins over the client's wish
        keep_alive = request.keep_alive and self._keep_alive is not False
        self._keep_alive = keep_alive
        version = request.version
        lines = [STATUS_LINES.get(status) or b"%d Unknown" % status]
        lines[0] = b"HTTP/%d.%d " % (version.major, version.minor) + lines[0]
        for name, value in self._raw_headers:
            lines.append(name + b": " + value)
        lines.append(b"X-Request-Id: " + encode(self._rid))
        body = self.raw_body
        if self.head_only:
            if self._head_length is not None:
                lines.append(b"Content-Length: " + self._head_length)
            body = b""
        elif status >= 200 and status != 204 and status != 304:
            lines.append(b"Content-Length: %d" % len(body))
        if not keep_alive:
            lines.append(b"Connection: close")
        elif version < (1, 1):
            lines.append(b"Connection: keep-alive")
        lines.append(b"\r\n")
        await writer.write(b"\r\n".join(lines) + body if len(body) < _SEPARATE_WRITE else b"\r\n".join(lines))
        if len(body) >= _SEPARATE_WRITE:
            await writer.write(body)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        pass  # everything went out in prepare()
