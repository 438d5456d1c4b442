"""The gateway's client connection protocol (cortexd/gateway/client_connection.py), fed bytes
on a fake transport: framing, answers in order, keep-alive, the head limits and refusals, the
budgets it counts in, and the flow control of request bodies."""

from __future__ import annotations

import asyncio
import json

from cortexd.gateway.admission import HEAD_LIMIT, MAX_HEADERS, REQUEST_LINE_LIMIT
from cortexd.gateway.answer_writer import stream_head
from cortexd.gateway.answers import Answer, answer_head, error_answer
from cortexd.gateway.client_connection import PIPELINE_LIMIT, ClientConnection
from cortexd.gateway.client_request import BODY_HIGH_WATER, ClientRequest
from cortexd.gateway.connections import ClientConnections


class FakeTransport(asyncio.Transport):
    """What the protocol writes, and what it asks of the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = self.eof = self.aborted = self.paused = False
        self.protocol: ClientConnection | None = None

    def get_extra_info(self, name, default=None):
        return ("127.0.0.7", 5555) if name == "peername" else default

    def write(self, data) -> None:
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0  # what is written goes out at once

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Served:
    """A request path that answers each request with its body, or with what a test asks."""

    def __init__(self) -> None:
        self.requests: list[ClientRequest] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, request: ClientRequest) -> Answer | None:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        body = b""
        while data := await request.readany():
            body += data
        return Answer(200, [(b"X-Path", request.raw_path.encode())], "rid-1", body, relayed=True)


def connect(serve=None, clients: ClientConnections | None = None) -> tuple[ClientConnection, FakeTransport, Served]:
    served = serve or Served()
    clients = clients or ClientConnections(60.0, 1 << 20, open_files=1024)
    conn = ClientConnection(set(), clients, served, 75.0)
    transport = FakeTransport()
    transport.protocol = conn
    conn.connection_made(transport)
    return conn, transport, served


async def turns(n: int = 5) -> None:
    """Let the connection's coroutine run (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


def answers(out: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each answer in `out` (bodies framed by Content-Length)."""
    found = []
    rest = bytes(out)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b": ")
            if name.lower() == b"content-length":
                length = int(value)
        found.append((head, rest[:length]))
        rest = rest[length:]
    return found


async def test_pipelined_requests_are_answered_in_order_on_a_kept_alive_connection():
    conn, transport, served = connect()
    conn.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
                       b"POST /b?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n")
    await turns()
    got = answers(transport.out)
    assert [body for _, body in got] == [b"one", b"two"]
    assert [r.raw_path for r in served.requests] == ["/a", "/b?q=1"]
    assert served.requests[1].chunked and served.requests[0].content_length == 3
    assert all(b"Connection" not in head and b"X-Request-Id: rid-1" in head for head, _ in got)
    assert not transport.closed and conn.idle()


async def test_a_client_pipelining_without_reading_answers_holds_a_bounded_queue():
    conn, transport, served = connect()
    served.gate = asyncio.Event()  # the first answer waits: the requests behind it queue
    one = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
    for _ in range(PIPELINE_LIMIT):
        conn.data_received(one)
        await turns(1)
    assert not transport.paused
    conn.data_received(one * 10)  # one read: parsed whole, then no more is read
    await turns()
    assert transport.paused and len(served.requests) == 1
    served.gate.set()
    await turns(50)
    assert not transport.paused and len(answers(transport.out)) == PIPELINE_LIMIT + 10
    assert not transport.closed


async def test_http10_closes_unless_it_asks_for_keep_alive():
    conn, transport, _ = connect()
    conn.data_received(b"GET / HTTP/1.0\r\n\r\n")
    await turns()
    assert transport.out.startswith(b"HTTP/1.0 200 OK\r\n") and b"Connection: close" in transport.out
    assert transport.closed
    conn, transport, _ = connect()
    conn.data_received(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    await turns()
    assert b"Connection: keep-alive" in transport.out and not transport.closed


async def test_connection_close_closes_after_the_answer_and_reads_no_more():
    conn, transport, served = connect()
    conn.data_received(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /next HTTP/1.1\r\n\r\n")
    await turns()
    assert len(served.requests) == 1 and b"Connection: close" in transport.out and transport.closed


def refusal(transport: FakeTransport) -> tuple[int, dict]:
    head, _, body = bytes(transport.out).partition(b"\r\n\r\n")
    assert b"Connection: close" in head and transport.eof  # said, then half-closed (lingering)
    return int(head.split(b" ")[1]), json.loads(body)


async def test_head_limits_answer_431_and_a_long_request_line_400():
    conn, transport, _ = connect()
    conn.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
    assert refusal(transport)[0] == 431
    conn, transport, _ = connect()
    conn.data_received(b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n")
    assert refusal(transport)[0] == 431
    conn, transport, _ = connect()
    lines = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 7000) for i in range(5))
    conn.data_received(b"GET / HTTP/1.1\r\n" + lines + b"\r\n")  # every line fits, the head does not
    assert refusal(transport)[0] == 431
    conn, transport, _ = connect()
    conn.data_received(b"GET /" + b"a" * REQUEST_LINE_LIMIT + b" HTTP/1.1\r\n\r\n")
    status, body = refusal(transport)
    assert status == 400 and body["error"].startswith("the request is not valid HTTP")


async def test_a_head_in_pieces_counts_in_the_shared_budget_until_it_is_whole():
    clients = ClientConnections(60.0, 1 << 20, open_files=1024)
    conn, transport, served = connect(clients=clients)
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\n")
    conn.data_received(b"X-A: 1\r\n")
    assert clients.held_heads.total == conn.held == 26 + 8 and not conn.idle()
    conn.data_received(b"Content-Length: 2\r\n\r\nok")
    await turns()
    assert clients.held_heads.total == 0 and not clients.held_heads.holders
    assert answers(transport.out)[0][1] == b"ok"
    conn, transport, _ = connect(clients=clients)
    conn.data_received(b"GET / HTTP/1.1\r\nX: " + b"x" * 8000 + b"\r\n")
    for _ in range(4):  # past HEAD_LIMIT, unfinished
        conn.data_received(b"Y: " + b"y" * 8000 + b"\r\n")
    assert refusal(transport)[0] == 431 and clients.held_heads.total == 0
    assert 4 * 8000 < HEAD_LIMIT < 5 * 8000


async def test_other_versions_get_505_and_malformed_heads_400_without_their_bytes():
    conn, transport, served = connect()
    conn.data_received(b"POST /api HTTP/2.0\r\nHost: x\r\nContent-Length: 2\r\n\r\nno")
    status, body = refusal(transport)
    assert (status, body["error"]) == (505, "HTTP/2.0 is not spoken here: send HTTP/1.1 (or HTTP/1.0)")
    assert transport.out.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n") and not served.requests
    conn, transport, _ = connect()
    conn.data_received(b"GARBAGE\x00\xff secret-token\r\n\r\n")
    status, body = refusal(transport)
    assert status == 400 and b"secret-token" not in transport.out and body["request_id"]
    conn.data_received(b"more")  # lingering: dropped unread
    assert transport.out.count(b"HTTP/1.1") == 1


async def test_a_bad_head_behind_a_request_being_answered_closes_after_its_answer():
    conn, transport, served = connect()
    served.gate = asyncio.Event()
    conn.data_received(b"GET /ok HTTP/1.1\r\n\r\nGET / HTTP/9.9\r\n\r\n")
    await turns()
    assert not transport.out
    served.gate.set()
    await turns()
    assert transport.out.startswith(b"HTTP/1.1 200 ") and transport.out.count(b"HTTP/1.") == 1 and transport.closed


async def test_a_large_body_stops_the_reading_until_it_is_read():
    release = asyncio.Event()

    async def serve(request: ClientRequest) -> Answer:
        await release.wait()
        size = 0
        while data := await request.readany():
            size += len(data)
        return Answer(200, [], "r", b"%d" % size)

    conn, transport, _ = connect(serve)
    total = 3 * BODY_HIGH_WATER
    conn.data_received(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % total)
    conn.data_received(b"x" * (BODY_HIGH_WATER + 1))
    assert transport.paused
    release.set()
    await turns()
    assert not transport.paused
    conn.data_received(b"x" * (total - BODY_HIGH_WATER - 1))
    await turns()
    assert answers(transport.out)[0][1] == b"%d" % total


async def test_the_head_timeout_and_the_keep_alive_timeout():
    conn, transport, _ = connect()
    conn._head_timed_out()  # a connection that sent nothing within the header timeout
    status, body = refusal(transport)
    assert status == 408 and "within 60 s" in body["error"]
    conn, transport, _ = connect()
    conn.data_received(b"GET / HTTP/1.1\r\n\r\n")
    await turns()
    conn._idle_since -= 80  # idle past the keep-alive timeout: closed silently
    conn._idle_due()
    assert transport.closed and transport.out.count(b"HTTP/1.1") == 1


def test_answer_heads_frame_the_answer_for_the_client():
    answer = error_answer(503, "busy", "rid-9", retry_after=True)
    head = answer_head(answer, (1, 1), False, False)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Retry-After: 1" in head and b"Connection: close" in head and b"X-Request-Id: rid-9" in head
    assert b"Content-Length: %d" % len(answer.body) in head
    relayed = Answer(200, [(b"Server", b"r")], "r", b"", relayed=True, head_only=True, head_length=b"42")
    assert b"Content-Length: 42" in answer_head(relayed, (1, 0), True, True)
    assert b"Connection: keep-alive" in answer_head(relayed, (1, 0), True, True)
    head, chunked, keep = stream_head(200, [], "r", (1, 0), None, True)  # HTTP/1.0, no length: to the close
    assert not chunked and not keep and b"Connection: close" in head
    head, chunked, keep = stream_head(200, [], "r", (1, 1), None, True)
    assert chunked and keep and b"Transfer-Encoding: chunked" in head


async def test_a_client_that_half_closes_after_its_request_still_gets_the_answer():
    conn, transport, served = connect()
    served.gate = asyncio.Event()
    conn.data_received(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
    assert conn.eof_received() is True  # the transport stays open for the answer
    served.gate.set()
    await turns()
    head, body = answers(transport.out)[0]
    assert body == b"hi" and b"Connection: close" in head and transport.closed
    conn, transport, _ = connect()
    assert conn.eof_received() is False  # nothing asked: the transport closes


async def test_a_pipeline_ending_in_connection_close_answers_every_request_then_closes():
    # the last request's `Connection: close` ends the connection after its own answer, not
    # after the answer being written when it was parsed (issue 20's attack review)
    conn, transport, served = connect()
    conn.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await turns(20)
    heads = [head for head, _ in answers(transport.out)]
    assert [r.raw_path for r in served.requests] == ["/a", "/b", "/c"] and len(heads) == 3
    assert [b"Connection: close" in head for head in heads] == [False, False, True]
    assert transport.closed


async def test_a_client_half_closing_after_a_pipeline_gets_every_answer():
    conn, transport, served = connect()
    served.gate = asyncio.Event()
    conn.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    await turns()
    assert conn.eof_received() is True  # answers still go out
    served.gate.set()
    await turns(20)
    heads = [head for head, _ in answers(transport.out)]
    assert len(heads) == 2 and [b"Connection: close" in head for head in heads] == [False, True]
    assert transport.closed


async def test_a_transfer_encoding_other_than_chunked_last_is_refused_before_it_is_served():
    # RFC 9112 6.3: the request's length cannot be determined; aiohttp answered 400 too
    for te in (b"gzip", b"chunkedx", b"identity"):
        conn, transport, served = connect()
        conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\nhi")
        await turns()
        status, body = refusal(transport)
        assert status == 400 and "Transfer-Encoding" in body["error"] and not served.requests, te
    conn, transport, served = connect()  # gzip, then chunked last: framed as chunked
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, Chunked\r\n"
                       b"\r\n2\r\nhi\r\n0\r\n\r\n")
    await turns()
    assert served.requests[0].chunked and answers(transport.out)[0][1] == b"hi"
    conn, transport, served = connect()  # RFC 9112 6.1: in HTTP/1.0 it is served, then the connection closes
    conn.data_received(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
                       b"\r\n2\r\nhi\r\n0\r\n\r\n")
    await turns()
    assert answers(transport.out)[0][1] == b"hi" and b"Connection: close" in transport.out and transport.closed


async def test_an_upgrade_request_with_a_body_is_refused_not_served_without_its_body():
    # llhttp skips the body of an upgrade request; the gateway upgrades nothing, so it would
    # pass the request on with its body lost
    conn, transport, served = connect()
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                       b"Content-Length: 2\r\n\r\nhi")
    await turns()
    status, body = refusal(transport)
    assert status == 400 and "Upgrade" in body["error"] and not served.requests
    conn, transport, served = connect()  # without a body it is served, and the connection closes
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    await turns()
    assert len(served.requests) == 1 and b"Connection: close" in transport.out and transport.closed


async def test_trailers_are_dropped_not_added_to_the_request_head():
    # llhttp reports a chunked body's trailers through on_header, after the head was made
    conn, transport, served = connect()
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n"
                       b"X-Request-Id: from-a-trailer\r\nHost: evil\r\n\r\n")
    await turns()
    request = served.requests[0]
    assert request.header(b"x-request-id") is None and request.header_all(b"host") == [b"x"]
    assert answers(transport.out)[0][1] == b"hi" and not transport.closed


async def test_trailers_past_the_head_limits_fail_the_body_at_once():
    conn, transport, served = connect()
    trailers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_HEADERS + 1))
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n" + trailers)
    await turns()
    assert served.requests[0].complete is False
    # at once, not after the body timeout: Served's readany raised (the real request path answers 400)
    assert transport.out.startswith(b"HTTP/1.1 500")


async def test_a_pipelined_head_in_pieces_counts_only_its_own_bytes_not_the_body_before_it():
    # one read holds a large body and the start of the next head: only that start is held
    clients = ClientConnections(60.0, 1 << 20, open_files=1024)
    conn, transport, served = connect(clients=clients)
    body = b"x" * (HEAD_LIMIT + 1000)
    conn.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
                       + b"POST /b HTTP/1.1\r\nHo")
    held = clients.held_heads.total
    conn.data_received(b"st: x\r\nContent-Length: 2\r\n\r\nok")
    await turns(20)
    assert [r.raw_path for r in served.requests] == ["/a", "/b"]
    assert [b for _, b in answers(transport.out)] == [body, b"ok"] and not transport.closed
    assert clients.held_heads.total == 0 and 0 < held < 100


async def test_a_client_that_reads_no_answers_stops_the_pipeline_at_the_transports_high_water():
    # whole answers are written without waiting: without this the next request would be served and
    # its answer buffered too, without bound, for a client that pipelines and never reads
    conn, transport, served = connect()
    write = transport.write

    def write_and_fill(data) -> None:
        write(data)
        conn.pause_writing()  # the transport's buffer is over its high-water mark

    transport.write = write_and_fill  # type: ignore[method-assign]
    one = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx"
    conn.data_received(one * 3)
    await turns(20)
    assert len(served.requests) == 1 and len(answers(transport.out)) == 1
    transport.write = write  # type: ignore[method-assign]
    conn.resume_writing()  # the client read
    await turns(20)
    assert len(served.requests) == 3 and len(answers(transport.out)) == 3 and not transport.closed


async def test_a_header_that_must_be_single_is_refused_when_repeated():
    # RFC 9112 3.2 (Host) and aiohttp's singleton headers, which the old gateway refused and a
    # replica (aiohttp) refuses: the request never reaches one
    for name in (b"Host", b"content-type", b"Transfer-Encoding", b"User-Agent"):
        conn, transport, served = connect()
        conn.data_received(b"POST / HTTP/1.1\r\n" + name + b": a\r\nX-Other: 1\r\n" + name.upper() + b": b\r\n"
                           b"Content-Length: 2\r\n\r\nhi")
        await turns()
        status, body = refusal(transport)
        assert status == 400 and name.decode().lower() in body["error"].lower() and not served.requests, name
    conn, transport, served = connect()  # headers that may repeat still do
    conn.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nCookie: 1\r\nCookie: 2\r\n\r\n")
    await turns()
    assert served.requests[0].header_all(b"accept") == [b"a", b"b"] and transport.out.startswith(b"HTTP/1.1 200")


async def test_a_trailer_line_that_never_ends_fails_the_body_past_the_head_limit():
    # httptools joins the pieces of a header value until its line ends (a copy per read): a
    # trailer that never ends would grow the gateway's memory and CPU until the body timeout
    conn, transport, served = connect()
    conn.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: ")
    await turns()
    for _ in range(HEAD_LIMIT // 1000 + 2):
        conn.data_received(b"a" * 1000)
    await turns()
    # at once, not after the body timeout: Served's readany raised (the real request path answers 400)
    assert transport.out.startswith(b"HTTP/1.1 500")


async def test_an_absolute_form_target_is_served_by_its_path_and_its_authority_is_the_host():
    # RFC 9112 3.2.2: a server must accept the absolute-form, and use its authority, not Host
    conn, transport, served = connect()
    conn.data_received(b"POST http://models.example:8888/iris?v=2 HTTP/1.1\r\nHost: other\r\n"
                       b"Content-Length: 2\r\n\r\nhi"
                       b"GET HTTPS://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    await turns()
    first, second = served.requests
    assert first.raw_path == "/iris?v=2" and first.header_all(b"host") == [b"models.example:8888"]
    assert second.raw_path == "/?q=1" and second.header_all(b"host") == [b"h"]
    assert [h.split(b"\r\n")[0] for h, _ in answers(transport.out)] == [b"HTTP/1.1 200 OK"] * 2


async def test_an_absolute_form_target_of_another_scheme_or_without_a_host_is_refused():
    for target in (b"ftp://h/iris", b"http:///iris", b"http://user@h/iris"):
        conn, transport, served = connect()
        conn.data_received(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        await turns()
        status, body = refusal(transport)
        assert status == 400 and "request target" in body["error"] and not served.requests, target


class IdleReplicaConnections:
    """A replica's pool of idle connections, as the gateway's socket count sees it (UpstreamPool)."""

    def __init__(self, clients: ClientConnections, idle: int):
        self.sockets, self.idle = clients.sockets, idle
        self.sockets.pools.add(self)

    def shed_idle(self, count: int) -> int:
        n = min(count, self.idle)
        self.idle -= n
        self.sockets.open -= n
        return n


async def test_at_the_socket_cap_idle_replica_connections_go_before_an_idle_client():
    clients = ClientConnections(60.0, 1 << 20, open_files=100)
    kept, kept_transport, _ = connect(clients=clients)
    kept.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await turns()
    assert kept.idle() and answers(kept_transport.out)
    pool = IdleReplicaConnections(clients, idle=5)
    clients.sockets.open = clients.sockets.cap  # the rest of the cap taken
    _, newcomer, _ = connect(clients=clients)
    assert pool.idle < 5 and not kept_transport.closed and not newcomer.closed
    assert clients.sockets.open <= clients.sockets.cap
