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

A whole answer goes back as an answers.Answer with those header bytes, written by the
client connection in one piece (answer_writer.py).

The common request (a small body that came with its head, a small answer on a
kept-alive connection) goes through plain functions only: the request path gains no
coroutine and no await over writing the request and waiting for the answer's head.
Header bytes are never decoded into dicts on the way through.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING

from cortexd.gateway.upstream import UpstreamConnection

if TYPE_CHECKING:  # client_request.py's; no import at run time (this module is imported first)
    from cortexd.gateway.client_request import ClientRequest

# The runtime serves predictions at "/" (and at its endpoint); "/" is the one that
# does not depend on the endpoint, so a rename never needs the replica to know.
UPSTREAM_PATH = "/"
# Responses with a Content-Length up to this are buffered whole before answering:
# a replica dying mid-body then yields a clean 502 instead of a truncated 200.
# Larger and chunked responses stream.
BUFFER_LIMIT = 1024 * 1024
# Bodies at least this large go out in a write of their own instead of being joined to their head
_SEPARATE_WRITE = 65536
_HTTP10 = (1, 0)

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

# the request lines of the usual methods, to the replica's UPSTREAM_PATH with no query
_REQUEST_LINES = {m: f"{m} {UPSTREAM_PATH} HTTP/1.1".encode() for m in ("POST", "GET", "PUT", "HEAD", "DELETE",
                                                                        "PATCH", "OPTIONS")}
STATUS_LINES = {s.value: b"%d %s" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def encode(text: str) -> bytes:
    """Text as bytes again (the request path is decoded as UTF-8 with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


# Connection tokens that never make a header hop-by-hop here: the framing words, and Host,
# which the replica needs (a client's `Connection: Host` must not strip it)
_NEVER_HOP = frozenset({b"close", b"keep-alive", b"host"})


class BodyTooLarge(Exception):
    """A streamed chunked request body grew past the gateway's limit (answered 413)."""


# -- the request ---------------------------------------------------------------------


def request_head(request: ClientRequest, host: str, port: int, query: str, rid: str,
                 body: bytes | None, streamed: bool) -> bytes:
    """The request head sent to the replica at host:port, ending in the blank line.

    `body` is the whole body (None: the request has none) or, when `streamed`, what was
    read of it so far; a streamed body keeps the client's Content-Length or goes chunked.
    """
    drop = _REQUEST_DROP
    forwarded_for: list[bytes] = []
    forwarded: list[bytes] = []
    has_host = False
    line = None if query else _REQUEST_LINES.get(request.method)
    lines = [line or encode(f"{request.method} {UPSTREAM_PATH}{query} HTTP/1.1")]
    for name, value in request.raw_headers:
        lname = name.lower()
        if lname not in drop:
            lines.append(name + b": " + value)
            has_host = has_host or lname == b"host"
        elif lname == b"connection":  # headers the client named as hop-by-hop (never Host: the replica needs it)
            named = {t.strip().lower() for t in value.split(b",")} - _NEVER_HOP
            if named:
                return _without(request, named, host, port, query, rid, body, streamed)
        elif lname == b"x-forwarded-for":
            forwarded_for.append(value)
        elif lname == b"forwarded":
            forwarded.append(value)
    lines.append(b"X-Request-Id: " + rid.encode())  # ASCII: checked, or made by the gateway
    # the client's address: appended to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for) and
    # to Forwarded (RFC 7239 `for=`), and as X-Real-IP, replacing what the client claimed
    conn = request.conn
    if forwarded_for or forwarded:
        peer = conn.peer
        peer_for = b", ".join(forwarded_for) + b", " + peer if forwarded_for else peer
        lines.append(b"X-Forwarded-For: " + peer_for)
        lines.append(b"X-Real-IP: " + peer)
        lines.append(b"Forwarded: " + (b", ".join(forwarded) + b", " if forwarded else b"") + conn.forwarded_for)
    else:
        lines.append(conn.peer_headers)  # all three, made once per connection
    if request.version == _HTTP10 and not has_host:
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


def _without(request: ClientRequest, named: set[bytes], host: str, port: int, query: str, rid: str,
             body: bytes | None, streamed: bool) -> bytes:
    """request_head() for a request whose Connection header names more hop-by-hop headers."""
    kept = [(n, v) for n, v in request.raw_headers if n.lower() not in named and n.lower() != b"connection"]
    saved = request.raw_headers
    request.raw_headers = kept
    try:
        return request_head(request, host, port, query, rid, body, streamed)
    finally:
        request.raw_headers = saved


def send_whole_body(conn: UpstreamConnection, head: bytes, body: bytes | None) -> None:
    """Write the head and a buffered body: one write, one segment, unless the body is large."""
    if body and len(body) >= _SEPARATE_WRITE:
        conn.write(head)
        conn.write(body)
    else:
        conn.write(head + body if body else head)


async def send_streamed_body(conn: UpstreamConnection, request: ClientRequest, head: bytes, buffered: bytes,
                             *, upstream_timeout: float, body_timeout: float, max_body_size: int) -> None:
    """Write the head, then the body as the client sends it, as fast as the replica takes it.

    A body with a Content-Length goes as sent; a chunked one (of which `buffered` was
    read already) goes chunked, and raises BodyTooLarge past `max_body_size`. Each read
    from the client waits at most `body_timeout` (TimeoutError). Stops early once the
    replica answered.
    """
    length = request.content_length
    if length is not None:
        conn.write(head)
        sent = 0
        while sent < length and not conn.head_done:  # stop early if the replica answered
            await conn.drain(upstream_timeout)
            async with asyncio.timeout(body_timeout):
                data = await request.readany()
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
            data = await request.readany()
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
