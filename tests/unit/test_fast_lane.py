"""The client connection's fast lane (client_connection.py with fast_lane.py's protocol): a whole
request begun from callbacks, its answer written when the exchange says so, in order with the
requests pipelined behind it; handed over to a coroutine when the exchange asks; cancelled when
the listener stops. A fake exchange stands in for the request path's (RequestPath.start)."""

from __future__ import annotations

import asyncio

from cortexd.gateway.answers import Answer
from cortexd.gateway.client_connection import ClientConnection
from cortexd.gateway.client_request import ClientRequest
from cortexd.gateway.connections import ClientConnections
from tests.unit.test_client_connection import FakeTransport, Served, answers, turns
from tests.unit.test_client_connection import connect as connect_coroutine


class Exchange:
    """A request on the fake fast lane: answered when the test says."""

    def __init__(self, lane: Lane, conn: ClientConnection, request: ClientRequest):
        self.lane, self.conn, self.request = lane, conn, request
        self.cancelled = False
        self.rest_answer: Answer | None = None

    def answer(self, body: bytes) -> None:
        self.conn.fast_done(self.request, Answer(200, [], "rid-fast", body, relayed=True))

    def hand_over(self, body: bytes) -> None:
        self.rest_answer = Answer(200, [], "rid-rest", body, relayed=True)
        self.conn.fast_handover(self)

    async def _rest(self) -> Answer | None:
        await asyncio.sleep(0)
        return self.rest_answer

    def rest(self):
        return self._rest()

    def cancel(self) -> None:
        self.cancelled = True


class Lane:
    """RequestPath.start's stand-in: takes requests to /fast, leaves the others to serve()."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.fail = False

    def __call__(self, request: ClientRequest, conn: ClientConnection) -> Exchange | None:
        if self.fail:
            raise RuntimeError("a bug in the request path")
        if not request.raw_path.startswith("/fast"):
            return None
        exchange = Exchange(self, conn, request)
        self.exchanges.append(exchange)
        return exchange


def connect() -> tuple[ClientConnection, FakeTransport, Served, Lane]:
    served, lane = Served(), Lane()
    clients = ClientConnections(60.0, 1 << 20, open_files=1024)
    conn = ClientConnection(set(), clients, served, 75.0, lane)
    transport = FakeTransport()
    transport.protocol = conn
    conn.connection_made(transport)
    return conn, transport, served, lane


def post(path: str, body: bytes = b"") -> bytes:
    return b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (path.encode(), len(body), body)


async def test_a_whole_request_is_answered_from_callbacks_with_no_coroutine():
    conn, transport, served, lane = connect()
    conn.data_received(post("/fast", b"one"))
    assert len(lane.exchanges) == 1 and conn._task is None  # begun at once, in the read's callback
    assert lane.exchanges[0].request.read_nowait() == b"one"  # whole: its body came with its head
    lane.exchanges[0].answer(b"fast-one")
    assert [body for _, body in answers(transport.out)] == [b"fast-one"]  # written at once, too
    assert conn.idle() and conn._task is None and not served.requests
    conn.data_received(post("/fast", b"two"))  # the next on the same connection: the fast lane again
    lane.exchanges[1].answer(b"fast-two")
    assert [body for _, body in answers(transport.out)] == [b"fast-one", b"fast-two"]


async def test_requests_pipelined_behind_a_fast_one_wait_for_its_answer_and_keep_their_order():
    conn, transport, served, lane = connect()
    conn.data_received(post("/fast", b"1") + post("/slow", b"2") + post("/fast", b"3"))
    assert len(lane.exchanges) == 1 and not served.requests  # the others wait behind it
    await turns()
    assert not transport.out and not served.requests
    lane.exchanges[0].answer(b"a1")
    await turns()  # /slow is served by the coroutine, which then serves /fast too
    assert [body for _, body in answers(transport.out)] == [b"a1", b"2", b"3"]
    assert len(lane.exchanges) == 1 and [r.raw_path for r in served.requests] == ["/slow", "/fast"]
    await turns()
    assert conn._task is None and conn.idle()  # the coroutine ended: the next is dispatched afresh
    conn.data_received(post("/fast", b"4"))
    assert len(lane.exchanges) == 2


async def test_a_request_whose_body_comes_later_is_served_by_the_coroutine():
    conn, transport, served, lane = connect()
    conn.data_received(b"POST /fast HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nhal")
    assert not lane.exchanges and conn._task is not None
    conn.data_received(b"ves")
    await turns()
    assert [body for _, body in answers(transport.out)] == [b"halves"] and not lane.exchanges


async def test_an_exchange_handed_over_is_answered_by_the_coroutine_then_the_lane_goes_on():
    conn, transport, served, lane = connect()
    conn.data_received(post("/fast", b"1") + post("/fast", b"2"))
    lane.exchanges[0].hand_over(b"rest-1")
    assert not transport.out
    await turns()
    head, body = answers(transport.out)[0]
    assert body == b"rest-1" and b"X-Request-Id: rid-rest" in head
    assert [r.raw_path for r in served.requests] == ["/fast"]  # the second: on the coroutine, in order
    await turns()
    assert conn._task is None and conn.idle()


async def test_a_listener_that_stops_cancels_the_fast_exchange_and_one_handed_over():
    conn, transport, _, lane = connect()
    conn.data_received(post("/fast", b"1"))
    conn.stop()
    assert lane.exchanges[0].cancelled and transport.aborted
    # handed over but not yet taken by its coroutine: still the connection's to cancel
    conn, transport, _, lane = connect()
    conn.data_received(post("/fast", b"1"))
    lane.exchanges[0].hand_over(b"never")
    conn.stop()
    assert lane.exchanges[0].cancelled
    await turns()
    assert not answers(transport.out)


async def test_a_request_path_that_raises_answers_500_and_closes():
    conn, transport, _, lane = connect()
    lane.fail = True
    conn.data_received(post("/fast", b"1"))
    ((head, body),) = answers(transport.out)
    assert head.startswith(b"HTTP/1.1 500") and b"internal error in the gateway" in body
    assert b"Connection: close" in head and transport.closed


async def test_the_client_closing_while_its_fast_request_runs_loses_only_its_answer():
    conn, transport, _, lane = connect()
    conn.data_received(post("/fast", b"1"))
    transport.close()  # the client went
    lane.exchanges[0].answer(b"late")  # the exchange still ends (and counts) as usual
    assert not transport.out and not conn.answering()


def fill_on_write(conn: ClientConnection, transport: FakeTransport) -> None:
    """Every write fills the transport's buffer past its high-water mark (a client that reads nothing)."""
    write = transport.write

    def write_and_fill(data) -> None:
        write(data)
        conn.pause_writing()

    transport.write = write_and_fill  # type: ignore[method-assign]


async def test_a_client_that_reads_no_answers_gets_no_more_served_until_it_has_room():
    # as on the coroutine path: a request that comes while the client's buffer is full waits for room
    # (else a client sending its next request after each answer, and reading none, has every answer
    # buffered, without bound); found by a review
    conn, transport, served, lane = connect()
    fill_on_write(conn, transport)
    conn.data_received(post("/fast", b"1"))
    lane.exchanges[0].answer(b"a1")
    for i in range(2, 6):  # one read each, nothing read back
        conn.data_received(post("/fast", b"%d" % i))
        await turns()
    assert len(lane.exchanges) == 1 and not served.requests
    transport.write = FakeTransport.write.__get__(transport)  # type: ignore[method-assign]
    conn.resume_writing()  # the client read
    await turns(30)
    assert [body for _, body in answers(transport.out)] == [b"a1", b"2", b"3", b"4", b"5"]


async def test_an_answer_the_client_has_no_room_for_is_bounded_by_the_send_timeout_as_on_the_coroutine():
    for name, (conn, transport) in {"coroutine": connect_coroutine()[:2], "fast lane": connect()[:2]}.items():
        fill_on_write(conn, transport)
        conn.data_received(post("/fast", b"1"))
        if name == "fast lane":
            conn._fast.answer(b"a1")
        await turns()
        assert len(answers(transport.out)) == 1, name
        assert conn._drain is not None, f"{name}: nothing waits for room (no send timeout armed)"
