"""The gateway's fast lane (fast_lane.py) against real upstreams on loopback: the usual request on
a pooled connection is served from callbacks, and what turns unusual on the way is handed over to
the request path's coroutine at that point, with serve()'s own outcome: a streamed answer, a retry
of a request the replica never read, a 502 for one it read, counts that end at zero. The proof of a
request never read holds on the unix socket of a process replica as on TCP (its hop: replica_files.py)."""

from __future__ import annotations

import asyncio
import select
import socket
import threading

import aiohttp
import pytest
import uvloop

from cortexd.gateway.request_path import RequestPath
from cortexd.gateway.routes import RouteConfig, SplitConfig
from tests.integration.test_gateway import client, gateways, one_api  # noqa: F401  (fixtures)
from tests.real_daemon import free_port

pytestmark = [
    pytest.mark.timeout(30),
    # the fixture below: pytest-asyncio's replacement (the pytest_asyncio_loop_factories hook)
    # parametrizes every async test of the suite, where only these need both loops
    pytest.mark.filterwarnings('ignore:Overriding the "event_loop_policy" fixture is deprecated'),
]


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request):
    """Each test on asyncio's loop and on uvloop's, which the daemon runs the gateway on: the
    callbacks' order, and what a reset looks like, are each loop's own."""
    return uvloop.EventLoopPolicy() if request.param == "uvloop" else asyncio.DefaultEventLoopPolicy()


@pytest.fixture
def lane(monkeypatch):
    """Each RequestPath.start's outcome, in order: True when it took the request onto the lane."""
    taken: list[bool] = []
    start = RequestPath.start

    def spied(self, listener, request, client):
        exchange = start(self, listener, request, client)
        taken.append(exchange is not None)
        return exchange

    monkeypatch.setattr(RequestPath, "start", spied)
    return taken


async def pooled(upstreams, gateways, client):
    """A gateway serving api 'api' with one replica, and an idle connection to it in the pool
    (one request answered): the next request can take the fast lane."""
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"warm") as r:
        assert r.status == 200
    return up, gw, base


class KeepsThenBreaks:
    """A replica that answers its connection's first request and keeps the connection; on the
    next it either closes with that request unread (`unread`: the kernel resets the connection,
    as a replica that exits does) or reads it and closes (a predictor that died running it).
    `unix`: it listens on a unix socket at that path (a process replica's hop), and nothing on its
    port: a gateway that tried the port would be refused."""

    def __init__(self, *, unread: bool, unix: str = ""):
        self.unread = unread
        self.requests = 0
        self.unix = unix
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix)
            self.sock.listen()
            self.port = free_port()
        else:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def replica(self) -> tuple[str, str, int, str]:
        return ("breaks", "127.0.0.1", self.port, self.unix)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data or not data.endswith(b"x"):  # the head and its 1-byte body
                    data += conn.recv(65536)
                self.requests += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Replica: breaks\r\n\r\nbreaks")
                select.select([conn], [], [], 5)  # the next request arrives
                if not self.unread:
                    conn.recv(65536)
                    self.requests += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


async def test_the_usual_request_on_a_pooled_connection_takes_the_lane_and_counts_as_before(
        upstreams, gateways, client, lane):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica])
    for i in range(6):
        async with client.post(f"{base}/api?n={i}", data=f"body-{i}".encode(),
                               headers={"X-Request-Id": f"mine-{i}"}) as r:
            assert (r.status, await r.read()) == (200, f"body-{i}".encode())
            assert r.headers["X-Request-Id"] == f"mine-{i}"
    assert lane == [False] + [True] * 5  # the first opened the connection the others reuse
    assert [h["X-Request-ID"] for h in up.seen_headers] == [f"mine-{i}" for i in range(6)]
    assert all(h["X-Forwarded-For"] == "127.0.0.1" for h in up.seen_headers)
    assert len(up.peers) == 1
    async with client.head(base + "/api") as r:  # HEAD: no body, and the connection is not reused
        assert r.status == 200 and await r.read() == b""
    assert lane[-1] is True
    assert gw.route("api").counters_snapshot()["2xx"] == 7
    assert gw.api_in_flight("api") == gw.replica_in_flight("api", "r1") == gw._path.in_flight == 0
    async with client.post(base + "/nowhere", data=b"x") as r:  # what the gateway answers itself: serve()
        assert r.status == 404
    assert lane[-1] is False


async def test_a_splitter_and_a_chunked_body_are_left_to_the_coroutine(upstreams, gateways, client, lane):
    up = await upstreams("r1")
    gw = gateways()
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 100)], [SplitConfig("split", "/split", port,
                                                                             (("api", 100, False),))])
    gw.set_replicas("api", [up.replica])
    gw.set_state("api", starting=False)
    base = f"http://127.0.0.1:{port}"
    for _ in range(2):
        async with client.post(base + "/split", data=b"x") as r:
            assert r.status == 200
    async def chunked():
        yield b"chunked"

    async with client.post(base + "/api", data=chunked()) as r:
        assert (r.status, await r.read()) == (200, b"chunked")
    assert lane == [False, False, False]
    assert gw.api_in_flight("api") == 0


async def test_an_answer_whose_body_comes_after_its_head_is_handed_over_and_streams(
        upstreams, gateways, client, lane):
    up, gw, base = await pooled(upstreams, gateways, client)
    async with client.get(base + "/api?chunks=3") as r:
        assert r.status == 200 and r.headers.get("Transfer-Encoding") == "chunked"
        # streamed as it comes: the replica waits for us before its last chunk
        assert await r.content.readexactly(len(b"chunk0;chunk1;")) == b"chunk0;chunk1;"
        up.release.set()
        assert await r.read() == b"chunk2;"
    assert lane == [False, True]
    async with client.post(base + "/api", data=b"after") as r:  # the connection went back to the pool
        assert (r.status, await r.read()) == (200, b"after")
    assert lane[-1] is True and len(up.peers) == 1
    assert gw.api_in_flight("api") == gw._path.in_flight == 0


@pytest.fixture(params=["tcp", "unix"])
def hop(request, short_dir):
    """How the gateway reaches the replica that breaks: its port, or a unix socket at this path."""
    return "" if request.param == "tcp" else f"{short_dir}/sock"


async def test_a_request_the_replica_never_read_is_retried_on_another(upstreams, gateways, client, lane, hop):
    breaks, good = KeepsThenBreaks(unread=True, unix=hop), await upstreams("good")
    try:
        gw, base = await one_api(gateways, [breaks.replica, good.replica])
        replicas = []
        for _ in range(3):  # breaks, good, then breaks again on its pooled connection: reset unread
            async with client.post(base + "/api", data=b"x") as r:
                assert r.status == 200
                replicas.append(r.headers["X-Replica"])
        assert replicas == ["breaks", "good", "good"]
        assert lane == [False, False, True]
        assert breaks.requests == 1 and good.requests == 2
        assert gw.replica_in_flight("api", "breaks") == gw.replica_in_flight("api", "good") == 0
        assert gw._path.in_flight == 0
    finally:
        breaks.stop()


async def test_a_request_the_replica_read_and_died_on_is_502_and_never_retried(upstreams, gateways, client,
                                                                                lane, hop):
    breaks, good = KeepsThenBreaks(unread=False, unix=hop), await upstreams("good")
    try:
        gw, base = await one_api(gateways, [breaks.replica, good.replica])
        statuses = []
        for _ in range(3):
            async with client.post(base + "/api", data=b"x") as r:
                statuses.append((r.status, r.headers.get("X-Replica")))
        assert statuses[:2] == [(200, "breaks"), (200, "good")]
        assert statuses[2][0] == 502
        assert lane == [False, False, True]
        assert breaks.requests == 2 and good.requests == 1  # read by the replica that died: not sent again
        assert gw.route("api").counters_snapshot()["5xx"] == 1
        assert gw.replica_in_flight("api", "breaks") == gw._path.in_flight == 0
    finally:
        breaks.stop()


async def test_a_fast_request_still_running_when_the_gateway_closes_is_cancelled_and_uncounted(
        upstreams, gateways, client, lane):
    up, gw, base = await pooled(upstreams, gateways, client)

    async def slow() -> None:
        async with client.post(base + "/api?sleep=5", data=b"x") as r:
            await r.read()

    pending = asyncio.ensure_future(slow())
    while gw.api_in_flight("api") < 1:
        await asyncio.sleep(0.01)
    assert lane == [False, True]
    await gw.close(drain_timeout=0.2)  # past the drain: cancelled, as serve()'s coroutine would be
    with pytest.raises(aiohttp.ClientError):  # the connection is cut
        await asyncio.wait_for(pending, 5)
    assert gw.api_in_flight("api") == gw.replica_in_flight("api", "r1") == gw._path.in_flight == 0
    assert gw.route("api").counters_snapshot()["5xx"] == 1


class LargeAnswers:
    """A replica answering each request with ANSWER bytes on a kept-alive connection, counting them."""

    ANSWER = 32 * 1024

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.ANSWER + b"x" * self.ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> tuple[str, str, int]:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return ("r1", "127.0.0.1", self.server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


async def test_a_client_that_never_reads_its_answers_stops_being_served(gateways, lane):
    """One request at a time, each sent once the last was answered, none read: the gateway stops
    serving it once its buffer for the client is full (found by a review: the fast lane served it
    all, 120 x 32 KiB buffered for a client that read nothing)."""
    replica = LargeAnswers()
    try:
        gw, base = await one_api(gateways, [await replica.start()])
        port = int(base.rsplit(":", 1)[1])
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            n = 60
            for i in range(n):
                await loop.sock_sendall(sock, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
                for _ in range(50):  # until the replica has it, or the gateway holds it back
                    if replica.requests > i:
                        break
                    await asyncio.sleep(0.005)
                else:
                    break
                if i == 0:  # the kernel's buffers small too, whatever this host's TCP settings
                    (conn,) = gw._listeners[port].connections
                    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            # 64 KiB of answers fill the gateway's buffer (its high-water mark): a few, not all 60
            assert replica.requests < 10
            assert True in lane  # the fast lane served it while it had room
        finally:
            sock.close()
    finally:
        replica.stop()


async def test_a_bug_while_starting_answers_500_and_loses_nothing(upstreams, gateways, client, lane, monkeypatch):
    """A failure inside RequestPath.start before anything was sent: 500 (as serve() answers a bug),
    the counts come back, and the pooled connection it took goes back to the pool, unused."""
    up, gw, base = await pooled(upstreams, gateways, client)
    made = RequestPath._request_id
    calls = []

    def failing(self, request):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return made(self, request)

    monkeypatch.setattr(RequestPath, "_request_id", failing)
    async with client.post(base + "/api", data=b"x") as r:
        assert r.status == 500
    async with client.post(base + "/api", data=b"again") as r:
        assert (r.status, await r.read()) == (200, b"again")
    assert lane == [False, True]  # the start that raised is not recorded
    assert len(up.peers) == 1 and up.requests == 2  # one connection, reused; the failed one never sent
    assert gw.api_in_flight("api") == gw.replica_in_flight("api", "r1") == gw._path.in_flight == 0
