"""The runtime's own HTTP/1.1 protocol (predictor_runtime/http_server.py), fed bytes through a recording transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from predictor_runtime import http_server
from predictor_runtime.http_server import BodyError, Connection, Reply, Request


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


async def echo(request: Request, reply: Reply) -> None:
    body = await request.body.read()
    reply.send(200, [("Content-Type", "text/plain")],
               f"{request.method} {request.path} ?{request.raw_query} {request.header('x-a')} ".encode() + body)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def exchange(*pieces: bytes, handler: Any = echo) -> tuple[bytes, bool, list[str]]:
    """Feed `pieces` to one connection; return what it wrote, whether it closed, the errors it logged."""
    records = Records()
    http_server.log.addHandler(records)

    async def run() -> tuple[bytes, bool]:
        connection = Connection(handler, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        for piece in pieces:
            connection.data_received(piece)
            for _ in range(20):
                await asyncio.sleep(0)
        connection.connection_lost(None)
        return bytes(transport.written), transport.closed

    try:
        written, closed = asyncio.run(run())
    finally:
        http_server.log.removeHandler(records)
    errors = [str(r.exc_info[1]) if r.exc_info else r.getMessage() for r in records.records]
    return written, closed, errors


def test_a_post_is_answered_with_its_length_and_the_connection_kept():
    written, closed, errors = exchange(b"POST /p/q?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-A: hi\r\n"
                                       b"Content-Length: 4\r\n\r\nbody")
    head, _, body = written.partition(b"\r\n\r\n")
    assert body == b"POST /p/q ?a=1&b=2 hi body"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head + b"\r\n" and b"\r\nDate: " in head
    assert (closed, errors) == (False, [])


def test_pipelined_requests_are_answered_in_order():
    written, _, _ = exchange(b"POST /one HTTP/1.1\r\nContent-Length: 1\r\n\r\nA"
                             b"POST /two HTTP/1.1\r\nContent-Length: 1\r\n\r\nB")
    assert written.index(b"POST /one") < written.index(b"POST /two")
    assert written.count(b"HTTP/1.1 200 OK") == 2


def test_a_chunked_body_arrives_whole_across_reads():
    written, _, _ = exchange(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
                             b"2\r\nde\r\n0\r\n\r\n")
    assert written.endswith(b"abcde")


def test_a_malformed_request_is_400_closed_and_reported_once():
    written, closed, errors = exchange(b"\x16\x03\x01 not http at all\r\n\r\n")
    assert written.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in written
    assert closed and len(errors) == 1


def test_a_header_past_the_line_limit_is_400():
    written, closed, errors = exchange(b"GET / HTTP/1.1\r\nX: " + b"A" * (http_server.LINE_LIMIT + 1) + b"\r\n\r\n")
    assert written.startswith(b"HTTP/1.1 400 ") and closed and "longer than" in errors[0]


def test_a_head_of_too_many_header_lines_is_400():
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(http_server.MAX_HEADERS + 1))
    written, closed, errors = exchange(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")
    assert written.startswith(b"HTTP/1.1 400 ") and closed and "header lines" in errors[0]
    written, closed, _ = exchange(b"GET / HTTP/1.1\r\n" + lines[:-len(b"X-256: 1\r\n")] + b"\r\n")
    assert written.startswith(b"HTTP/1.1 200 ") and not closed


def test_a_client_pipelining_without_reading_answers_holds_a_bounded_queue():
    gate: list[asyncio.Event] = []
    paused: list[bool] = []

    async def held(request: Request, reply: Reply) -> None:
        await gate[0].wait()
        reply.send(200, [], await request.body.read())

    async def run() -> bytes:
        gate.append(asyncio.Event())
        connection = Connection(held, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        one = b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
        connection.data_received(one * (http_server.PIPELINE_LIMIT + 1))  # one served, 32 waiting
        await asyncio.sleep(0)
        paused.append(transport.paused)
        connection.data_received(one * 5)  # what one read held is parsed, then no more is read
        paused.append(transport.paused)
        gate[0].set()
        for _ in range(200):
            await asyncio.sleep(0)
        paused.append(transport.paused)
        return bytes(transport.written)

    written = asyncio.run(run())
    assert paused == [False, True, False]
    assert written.count(b"HTTP/1.1 200 OK") == http_server.PIPELINE_LIMIT + 6


def test_a_broken_chunk_fails_the_body_read_and_the_connection_closes_after_the_answer():
    seen: list[str] = []

    async def reads(request: Request, reply: Reply) -> None:
        try:
            await request.body.read()
        except BodyError as e:
            seen.append(str(e))
            reply.send(400, [], b"bad body")

    written, closed, _ = exchange(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n",
                                  b"ZZ\r\nnot a chunk\r\n", handler=reads)
    assert seen and seen[0].startswith("invalid request body")
    assert written.startswith(b"HTTP/1.1 400 ") and closed


def test_a_client_gone_mid_body_fails_the_read_with_connection_reset():
    seen: list[type] = []

    async def reads(request: Request, reply: Reply) -> None:
        try:
            await request.body.read()
        except ConnectionResetError as e:
            seen.append(type(e))

    exchange(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\nonly part", handler=reads)
    assert seen == [ConnectionResetError]


def test_connection_close_and_http_1_0_close_after_the_answer():
    for head in (b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                 b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n"):
        written, closed, _ = exchange(head)
        assert b"\r\nConnection: close\r\n" in written and closed


def test_head_gets_the_headers_without_the_body():
    written, _, _ = exchange(b"HEAD / HTTP/1.1\r\n\r\n")
    assert written.endswith(b"\r\n\r\n") and b"Content-Length: " in written


def test_a_streamed_answer_is_chunked_unless_it_set_a_length():
    async def streams(request: Request, reply: Reply) -> None:
        reply.start(200, [("Content-Type", "text/plain")])
        await reply.write(b"one")
        await reply.write(b"two")
        reply.end()

    written, closed, _ = exchange(b"GET / HTTP/1.1\r\n\r\n", handler=streams)
    assert b"Transfer-Encoding: chunked" in written and written.endswith(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
    assert not closed


@pytest.mark.parametrize("fails", [True, False], ids=["raises", "returns-without-answer"])
def test_a_handler_that_fails_or_does_not_answer_gives_500_and_closes(fails):
    async def broken(request: Request, reply: Reply) -> None:
        if fails:
            raise RuntimeError("bug")

    written, closed, _ = exchange(b"GET / HTTP/1.1\r\n\r\n", handler=broken)
    assert written.startswith(b"HTTP/1.1 500 ") and closed


def test_a_large_unread_body_pauses_reading_until_the_handler_reads():
    states: list[bool] = []

    async def slow(request: Request, reply: Reply) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        states.append(transport_paused())
        await request.body.read()
        states.append(transport_paused())
        reply.send(200, [])

    transports: list[RecordingTransport] = []

    def transport_paused() -> bool:
        return transports[0].paused

    async def run() -> None:
        connection = Connection(slow, set())
        transports.append(RecordingTransport())
        connection.connection_made(transports[0])
        size = http_server.HIGH_WATER + 10
        connection.data_received(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        for _ in range(20):
            await asyncio.sleep(0)
        connection.connection_lost(None)

    asyncio.run(run())
    assert states == [True, False]


def test_expect_100_continue_is_answered_before_the_body_is_sent():
    written, _, _ = exchange(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", b"ok")
    assert written.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") and written.endswith(b" ok")


def test_an_answer_header_with_a_line_break_is_refused_not_sent():
    async def injects(request: Request, reply: Reply) -> None:
        reply.send(200, [("X-A", "ok\r\nSet-Cookie: evil=1")], b"")

    written, closed, _ = exchange(b"GET / HTTP/1.1\r\n\r\n", handler=injects)
    assert written.startswith(b"HTTP/1.1 500 ") and b"evil" not in written and closed


class Clock:
    """The running loop's clock, moved by the test (timers fire once it passes their time), and
    a count of the timers armed through the loop."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers = 0
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counted_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.timers += 1
            return call_at(when, callback, *args, **kwargs)

        loop.time = lambda: self.now  # type: ignore[method-assign]
        loop.call_at = counted_call_at  # type: ignore[method-assign]  # call_later goes through it

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for _ in range(20):
            await asyncio.sleep(0)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HALF_HEAD = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Le"


def test_the_timeouts_are_the_gateways():
    from cortexd.gateway.proxy import CLIENT_HEADER_TIMEOUT, CLIENT_KEEPALIVE
    from cortexd.gateway.request_path import CLIENT_BODY_TIMEOUT
    from predictor_runtime.contract import ReplicaLimits

    assert http_server.HEADER_TIMEOUT == ReplicaLimits().header_timeout == CLIENT_HEADER_TIMEOUT
    assert http_server.BODY_TIMEOUT == ReplicaLimits().body_timeout == CLIENT_BODY_TIMEOUT
    assert http_server.KEEPALIVE_TIMEOUT == CLIENT_KEEPALIVE


@pytest.mark.parametrize("sent", [b"", HALF_HEAD], ids=["nothing", "half a head"])
def test_a_head_not_arrived_whole_in_time_is_408_and_closed_counted_from_the_opening(sent):
    records = Records()
    http_server.log.addHandler(records)

    async def run() -> list[tuple[bytes, bool]]:
        clock = Clock()
        connection = Connection(echo, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        seen = []
        await clock.advance(30)
        connection.data_received(sent)  # its first byte does not restart the head's time
        await clock.advance(29.9)
        seen.append((bytes(transport.written), transport.closed))
        await clock.advance(0.1)
        seen.append((bytes(transport.written), transport.closed))
        return seen

    try:
        (before, closed_before), (after, closed_after) = asyncio.run(run())
    finally:
        http_server.log.removeHandler(records)
    assert (before, closed_before) == (b"", False)
    head, _, body = after.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"\r\nConnection: close" in head
    assert body == b'{"error":"the request head did not arrive within 60 s"}' and closed_after
    assert [type(r.exc_info[1]) for r in records.records if r.exc_info] == [http_server.HeadTimeout]


def test_a_later_heads_time_counts_from_its_first_byte_and_no_timer_is_armed_per_request():
    async def run() -> tuple[int, bool, bytes, bool]:
        clock = Clock()
        server = http_server.HTTPServer(echo, header_timeout=5.0)  # the server's setting reaches its connections
        connection = server.protocol()
        transport = RecordingTransport()
        connection.connection_made(transport)
        for _ in range(10):
            connection.data_received(GET)
            await clock.advance(1)
        timers = clock.timers  # the one armed at the opening, and those it armed firing every 5 s
        await clock.advance(60)  # idle (not past the keep-alive timeout): a head may begin any time
        connection.data_received(HALF_HEAD)
        await clock.advance(4.9)
        open_at_4_9 = not transport.closed
        await clock.advance(0.1)
        return timers, open_at_4_9, bytes(transport.written), transport.closed

    timers, open_at_4_9, written, closed = asyncio.run(run())
    assert timers <= 3 and open_at_4_9
    assert written.count(b"HTTP/1.1 200 OK") == 10 and written.count(b"HTTP/1.1 408 ") == 1 and closed


def test_an_idle_keep_alive_connection_closes_silently_and_a_busy_one_does_not():
    release: list[asyncio.Event] = []

    async def held(request: Request, reply: Reply) -> None:
        if request.path == "/held":
            await release[0].wait()
        reply.send(200, [], b"")

    async def run() -> list[tuple[int, bool]]:
        clock = Clock()
        release.append(asyncio.Event())
        connection = Connection(held, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        seen = []
        connection.data_received(b"GET /held HTTP/1.1\r\n\r\n")
        await clock.advance(200)  # a request answered slowly: the connection stays
        seen.append((bytes(transport.written).count(b"HTTP/1.1 "), transport.closed))
        release[0].set()
        await clock.advance(0)  # answered: idle from now
        await clock.advance(50)
        connection.data_received(b"\r\n")  # an empty line between requests: no request, still idle
        await clock.advance(24.9)
        seen.append((bytes(transport.written).count(b"HTTP/1.1 "), transport.closed))
        await clock.advance(0.1)
        seen.append((bytes(transport.written).count(b"HTTP/1.1 "), transport.closed))
        return seen

    assert asyncio.run(run()) == [(0, False), (1, False), (1, True)]  # closed without a word


def test_a_head_trickling_in_behind_an_answer_closes_the_connection_after_that_answer():
    release: list[asyncio.Event] = []

    async def held(request: Request, reply: Reply) -> None:
        await release[0].wait()
        reply.send(200, [], b"done")

    async def run() -> tuple[bool, bytes, bool]:
        clock = Clock()
        release.append(asyncio.Event())
        connection = Connection(held, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        connection.data_received(GET + HALF_HEAD)
        await clock.advance(61)
        closed_while_answering = transport.closed
        release[0].set()
        await clock.advance(0)
        return closed_while_answering, bytes(transport.written), transport.closed

    closed_while_answering, written, closed = asyncio.run(run())
    assert not closed_while_answering
    assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"done") and closed
    assert b" 408 " not in written


def test_shutdown_closes_idle_connections_and_lets_a_busy_one_answer_first():
    release = asyncio.Event()

    async def waits(request: Request, reply: Reply) -> None:
        await release.wait()
        reply.send(200, [], b"done")

    async def run() -> tuple[bool, bytes, bool]:
        server = http_server.HTTPServer(waits)
        idle, busy = server.protocol(), server.protocol()
        idle_transport, busy_transport = RecordingTransport(), RecordingTransport()
        idle.connection_made(idle_transport)
        busy.connection_made(busy_transport)
        busy.data_received(b"GET / HTTP/1.1\r\n\r\n")
        await asyncio.sleep(0)
        shutdown = asyncio.ensure_future(server.shutdown(asyncio.get_running_loop().time() + 30))
        await asyncio.sleep(0)
        idle_closed_at_once = idle_transport.closed and not busy_transport.closed
        release.set()
        await shutdown
        return idle_closed_at_once, bytes(busy_transport.written), busy_transport.closed

    idle_closed_at_once, answer, busy_closed = asyncio.run(run())
    assert idle_closed_at_once and answer.endswith(b"done") and busy_closed


def test_requests_still_waiting_when_the_client_goes_are_not_run():
    seen: list[str] = []
    release = asyncio.Event()

    async def slow(request: Request, reply: Reply) -> None:
        seen.append(request.path)
        await release.wait()
        reply.send(200, [], b"")

    async def run() -> None:
        connection = Connection(slow, set())
        connection.connection_made(RecordingTransport())
        connection.data_received(b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\n")
        await asyncio.sleep(0)
        connection.connection_lost(None)
        release.set()
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run(run())
    assert seen == ["/one"]


async def read_or_refuse(request: Request, reply: Reply) -> None:
    """The server's handling of a body (server.py: payload.read_body; a PayloadError is its status)."""
    from predictor_runtime.payload import PayloadError, read_body

    try:
        body = await read_body(request, 1 << 20)
    except PayloadError as e:
        reply.send(e.status, [], str(e).encode())
        return
    reply.send(200, [], b"%d" % len(body))


def test_a_body_that_stops_arriving_is_408_and_closed_counted_from_its_last_byte():
    async def run() -> list[tuple[bytes, bool]]:
        clock = Clock()
        connection = Connection(read_or_refuse, set())
        transport = RecordingTransport()
        connection.connection_made(transport)
        seen = []
        connection.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        for _ in range(3):  # a byte every 50 s: slow, but arriving
            await clock.advance(50)
            connection.data_received(b"c")
        seen.append((bytes(transport.written), transport.closed))
        await clock.advance(59.9)  # 60 s after the last byte
        seen.append((bytes(transport.written), transport.closed))
        await clock.advance(0.1)
        seen.append((bytes(transport.written), transport.closed))
        return seen

    (early, closed_early), (before, closed_before), (after, closed_after) = asyncio.run(run())
    assert (early, closed_early, before, closed_before) == (b"", False, b"", False)
    head, _, body = after.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head and closed_after
    assert body == b"the request body did not arrive within 60 s"


def test_a_body_paused_for_its_handler_is_not_timed_out_and_its_time_restarts_on_resuming():
    release: list[asyncio.Event] = []

    async def slow(request: Request, reply: Reply) -> None:
        await release[0].wait()  # the handler reads nothing yet: the server stops reading the client
        await read_or_refuse(request, reply)

    async def run() -> tuple[bool, bytes, bool]:
        clock = Clock()
        release.append(asyncio.Event())
        connection = Connection(slow, set(), body_timeout=5.0)  # the server's setting, short here
        transport = RecordingTransport()
        connection.connection_made(transport)
        size = http_server.HIGH_WATER + 10
        connection.data_received(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (size + 5) + b"x" * size)
        await clock.advance(0)
        paused = transport.paused
        await clock.advance(300)  # paused for the handler: no timeout
        release[0].set()
        await clock.advance(4.9)  # reading resumed: 5 s from now
        connection.data_received(b"yyyyy")
        await clock.advance(0)
        return paused, bytes(transport.written), transport.closed

    paused, written, closed = asyncio.run(run())
    assert paused and written.startswith(b"HTTP/1.1 200 ") and written.endswith(b"%d" % (http_server.HIGH_WATER + 15))
    assert not closed
