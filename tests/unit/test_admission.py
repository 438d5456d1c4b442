"""What the gateway lets clients hold (cortexd/gateway/admission.py): the socket cap below the
open-file limit, the size of a head, the order connections are shed in, the held-heads budget."""

from __future__ import annotations

import asyncio

from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import HttpRequestParserPy

from cortexd.gateway.admission import (
    HEAD_LIMIT,
    HEADER_LINE_LIMIT,
    REQUEST_LINE_LIMIT,
    HeldHeads,
    SocketCount,
    head_size,
    oldest_idle,
    shed_batch,
    socket_cap,
    socket_reserve,
)
from cortexd.gateway.client_connection import _header_fields_too_large, _next_head_bytes


def parsed(data: bytes):
    """The request messages aiohttp's parser makes of `data` (the pure-Python one: the same fields)."""

    class Protocol:
        transport = None

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

    loop = asyncio.new_event_loop()  # a body's StreamReader wants one; nothing runs on it
    try:
        parser = HttpRequestParserPy(Protocol(), loop, 2**16, max_line_size=REQUEST_LINE_LIMIT,
                                     max_field_size=HEADER_LINE_LIMIT)
        messages, _, _ = parser.feed_data(data)
    finally:
        loop.close()
    return [m for m, _ in messages]


class Conn:
    held = 0


def test_the_gateway_keeps_descriptors_for_the_rest_of_the_daemon():
    assert (socket_reserve(1024), socket_cap(1024)) == (128, 896)
    assert (socket_reserve(20_000), socket_cap(20_000)) == (2048, 17_952)
    assert socket_cap(400) == 272
    assert socket_cap(100) == 50  # a tiny limit: half of it, not nothing
    assert socket_cap(1) == 1


def test_head_size_is_the_head_as_sent():
    head = b"GET /api?x=1 HTTP/1.1\r\nHost: example\r\nX-Long: " + b"v" * 500 + b"\r\n\r\n"
    (message,) = parsed(head)
    assert head_size(message) == len(head)
    assert head_size(object()) == 0  # aiohttp's error info: no head


def test_head_limits_are_nginx_large_client_header_buffers():
    assert HEAD_LIMIT == 4 * 8192
    assert HEADER_LINE_LIMIT == 8192 and REQUEST_LINE_LIMIT != HEADER_LINE_LIMIT


def test_a_header_line_or_too_many_of_them_is_431_the_request_line_is_not():
    assert _header_fields_too_large(LineTooLong(b"X-Big...", HEADER_LINE_LIMIT))
    assert not _header_fields_too_large(LineTooLong(b"/aaaa...", REQUEST_LINE_LIMIT))
    assert _header_fields_too_large(BadHttpMessage("Too many headers received"))
    assert not _header_fields_too_large(BadHttpMessage("Missing 'Host' header in request."))
    assert not _header_fields_too_large(None)


def test_what_a_large_read_may_leave_of_a_next_head():
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
    (message,) = parsed(head + b"a" * 2000)
    assert _next_head_bytes(head + b"a" * 2000, message, alone=True) == 0
    assert _next_head_bytes(head + b"a" * 2000 + b"GET / HT", message, alone=True) == 8
    # not from a clean start, or a chunked body: the whole read, an upper bound
    assert _next_head_bytes(head + b"a" * 2000, message, alone=False) == len(head) + 2000
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    (message,) = parsed(chunked)
    assert _next_head_bytes(chunked, message, alone=True) == len(chunked)


def test_idle_connections_are_shed_oldest_idle_first_in_batches():
    assert oldest_idle([(5.0, "e"), (1.0, "a"), (3.0, "c"), (2.0, "b")], 2) == ["a", "b"]
    assert oldest_idle([(1.0, "a")], 5) == ["a"]
    assert shed_batch(17_952) == 280 and shed_batch(10) == 1


def test_socket_count_sheds_idle_connections_when_full():
    closed = []
    sockets = SocketCount(400)

    def shed() -> int:
        closed.append(sockets.open)
        sockets.open -= 3
        return 3

    sockets.shed = shed
    sockets.open = sockets.cap - 1
    assert sockets.has_room() and not closed
    sockets.open = sockets.cap
    assert sockets.has_room() and closed == [sockets.cap]
    sockets.shed = lambda: 0  # nothing idle to close
    sockets.open = sockets.cap
    assert not sockets.has_room()


def test_held_heads_budget_names_the_connection_that_held_longest():
    heads = HeldHeads(budget=100)
    a, b, c = Conn(), Conn(), Conn()
    assert not heads.add(a, 40)
    assert not heads.add(b, 40)
    assert not heads.add(a, 10)  # a holds more, and still since first
    assert heads.add(c, 20)  # 110 > 100
    assert heads.over() and heads.longest_held() is a and a.held == 50
    heads.release(a)
    assert (heads.total, a.held, heads.over(), heads.longest_held()) == (60, 0, False, b)
    heads.release(a)  # twice: nothing more
    assert heads.total == 60
