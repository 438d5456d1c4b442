"""The gateway against real upstream servers on loopback, seen through a real HTTP client.

Upstreams (tests/upstreams.py) are small aiohttp apps (echo, slow, chunked) and raw
asyncio servers that misbehave (close mid-response); the Gateway listens on a free port and is
configured the way the daemon configures it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import time

import aiohttp
import pytest

from cortexd.core.api_status import Failure
from cortexd.errors import CortexdError
from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import RouteConfig
from tests.real_daemon import free_port, server_has_read
from tests.upstreams import RawUpstream, Upstream

pytestmark = pytest.mark.timeout(30)


# -- upstreams ---------------------------------------------------------------------------


# the `upstreams` fixture (tests/integration/conftest.py) starts them


@pytest.fixture
async def gateways():
    made: list[Gateway] = []

    def make(**kwargs) -> Gateway:
        gw = Gateway("127.0.0.1", **kwargs)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.close(drain_timeout=1)


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


async def one_api(make, up_replicas, *, max_concurrency: int = 100, endpoint: str = "/api",
                  **kwargs) -> tuple[Gateway, str]:
    """A gateway serving api 'api' at `endpoint` on a free port, with the given replicas."""
    gw = make(**kwargs)
    port = free_port()
    await gw.configure([RouteConfig("api", endpoint, port, max_concurrency)])
    gw.set_replicas("api", up_replicas)
    gw.set_state("api", starting=False)
    return gw, f"http://127.0.0.1:{port}"


# -- proxying ----------------------------------------------------------------------------


async def test_json_and_binary_bodies_pass_through_both_ways(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica])

    async with client.post(base + "/api", json={"x": [1, 2.5, "é"]}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        assert await r.json() == {"x": [1, 2.5, "é"]}

    blob = bytes(range(256)) * 4000  # ~1 MB, every byte value
    async with client.post(base + "/api", data=blob,
                           headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 200
        assert await r.read() == blob
        assert r.headers["X-Replica"] == "r1"

    async with client.get(base + "/api") as r:  # GET reaches the runtime's usage message
        assert (r.status, await r.text()) == (200, "usage: POST to r1")

    route = gw.route("api").counters_snapshot()
    assert (route["total"], route["2xx"], route["4xx"], route["5xx"]) == (3, 3, 0, 0)


async def test_query_string_and_trailing_slash(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.get(base + "/api/?x=1&y=a%20b&x=2") as r:
        assert r.status == 200
        assert r.headers["X-Seen-Path"] == "/?x=1&y=a%20b&x=2"


async def test_chunked_request_body_is_buffered_then_streamed_past_the_buffer(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica], request_buffer_size=64 * 1024)

    async def body(parts: int, size: int):
        for i in range(parts):
            yield f"part{i}-".encode() * size
            await asyncio.sleep(0.01)

    # within the buffer: read whole, then sent with a Content-Length (nginx's request buffering)
    async with client.post(base + "/api", data=body(5, 1000)) as r:
        assert r.status == 200
        assert r.headers["X-Seen-Transfer-Encoding"] == ""
        assert await r.read() == b"".join(f"part{i}-".encode() * 1000 for i in range(5))
    # past it: streamed to the replica as it comes, still chunked
    async with client.post(base + "/api", data=body(5, 4000)) as r:
        assert r.status == 200
        assert r.headers["X-Seen-Transfer-Encoding"] == "chunked"
        assert await r.read() == b"".join(f"part{i}-".encode() * 4000 for i in range(5))


async def test_chunked_response_streams_before_it_is_complete(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.get(base + "/api?chunks=3") as r:
        assert r.status == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        first = await r.content.readexactly(len(b"chunk0;chunk1;"))
        # the replica has not sent its last chunk yet: it waits for us
        assert first == b"chunk0;chunk1;" and not up.release.is_set()
        up.release.set()
        assert await r.read() == b"chunk2;"


async def test_request_id_generated_and_propagated(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"x", headers={"X-Request-Id": "abc-123"}) as r:
        assert r.headers["X-Request-Id"] == "abc-123"
        assert r.headers["X-Seen-Request-Id"] == "abc-123"
        assert r.headers.getall("X-Request-Id") == ["abc-123"]
    ids = set()
    for _ in range(2):
        async with client.post(base + "/api", data=b"x") as r:
            rid = r.headers["X-Request-Id"]
            assert rid and r.headers["X-Seen-Request-Id"] == rid
            ids.add(rid)
    assert len(ids) == 2
    async with client.get(base + "/nowhere") as r:  # answers the gateway gives itself too
        assert r.status == 404 and r.headers["X-Request-Id"]


async def test_hop_by_hop_headers_are_not_forwarded(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"x",
                           headers={"Connection": "keep-alive, X-Private", "X-Private": "1",
                                    "X-Kept": "2"}) as r:
        assert r.status == 200
        assert "Keep-Alive" not in r.headers
    seen = up.seen_headers[-1]
    assert seen.get("X-Kept") == "2" and "X-Private" not in seen


async def test_head_request(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.head(base + "/api") as r:
        assert r.status == 200 and await r.read() == b""
    async with client.get(base + "/api") as r:  # the connection after a HEAD is not confused
        assert await r.text() == "usage: POST to r1"


async def test_connections_to_a_replica_are_kept_alive(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    for _ in range(5):
        async with client.post(base + "/api", data=b"x") as r:
            assert r.status == 200
    assert up.requests == 5 and len(up.peers) == 1


async def test_connection_close_from_the_replica_is_honoured(gateways, client):
    # the replica says "Connection: close" but leaves the socket open: reusing it would hang
    raw = await RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            then_wait=5).start()
    try:
        _, base = await one_api(gateways, [("r1", "127.0.0.1", raw.port)], upstream_timeout=1)
        for _ in range(3):
            async with client.post(base + "/api", data=b"x") as r:
                assert (r.status, await r.read()) == (200, b"ok")
        assert raw.connections == 3
    finally:
        await raw.stop()


async def test_replica_answering_before_the_whole_body_is_relayed(upstreams, gateways, client):
    up = Upstream("small")
    up.client_max_size = 1024  # aiohttp answers 413 as soon as the body passes this
    await up.start()
    try:
        _, base = await one_api(gateways, [up.replica])
        async with client.post(base + "/api", data=io.BytesIO(b"x" * (8 * 2**20))) as r:
            assert r.status == 413  # the replica's own answer, not a gateway 502
        async with client.post(base + "/api", data=b"y" * 100) as r:
            assert (r.status, await r.read()) == (200, b"y" * 100)
    finally:
        await up.stop()


# -- the gateway's own answers -------------------------------------------------------------


async def test_unknown_path_lists_the_endpoints(upstreams, gateways, client):
    up = await upstreams("r1")
    gw = gateways()
    port = free_port()
    await gw.configure([RouteConfig("a", "/a", port, 10), RouteConfig("b", "/deploy/b", port, 10)])
    gw.set_replicas("a", [up.replica])
    async with client.get(f"http://127.0.0.1:{port}/nope") as r:
        assert r.status == 404
        body = await r.json()
        assert body["endpoints"] == ["/a", "/deploy/b"]
        assert "/nope" in body["error"] and "/a, /deploy/b" in body["error"]


async def test_body_over_the_limit_is_413(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica], max_body_size=1000)
    async with client.post(base + "/api", data=b"x" * 2000) as r:
        assert r.status == 413
        assert "1000 bytes" in (await r.json())["error"]

    async def body():
        for _ in range(4):
            yield b"y" * 600

    async with client.post(base + "/api", data=body()) as r:  # chunked: counted as it streams
        assert r.status == 413
    async with client.post(base + "/api", data=b"z" * 1000) as r:  # at the limit is fine
        assert r.status == 200
    assert up.bodies == 1  # no oversized body reached the replica whole
    assert gw.route("api").counters_snapshot()["4xx"] == 2


async def test_concurrency_limit_answers_503_with_retry_after(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica], max_concurrency=1)

    async def call(path):
        async with client.post(base + path, data=b"x") as r:
            return r.status, dict(r.headers), await r.text()

    slow = asyncio.ensure_future(call("/api?sleep=2"))  # still in flight when the next one comes, under load
    while gw.replica_in_flight("api", "r1") < 1:
        await asyncio.sleep(0.01)
    status, headers, text = await call("/api")
    assert status == 503 and headers["Retry-After"] == "1"
    assert json.loads(text)["error"] == (
        "api 'api' is at its concurrency limit (max_replica_concurrency=1 per replica, 1 replica)")
    assert (await slow)[0] == 200
    assert (await call("/api"))[0] == 200  # room again


# -- no replica: wait, serve or give up ------------------------------------------------------


async def test_no_replica_waits_then_503(gateways, client):
    gw = gateways(no_replica_wait=0.3)
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 10)])
    gw.set_state("api", starting=True)
    t0 = time.monotonic()
    async with client.post(f"http://127.0.0.1:{port}/api", data=b"x") as r:
        waited = time.monotonic() - t0
        assert r.status == 503 and r.headers["Retry-After"]
        assert (await r.json())["error"] == "api 'api' is starting: no replica is ready yet"
    # it waited (0.3 s), then gave up; the generous upper bound is still below the default 30 s
    assert 0.25 <= waited < 15


async def test_waiting_request_is_served_when_a_replica_appears(upstreams, gateways, client):
    up = await upstreams("r1")
    gw = gateways(no_replica_wait=5)
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 10)])
    gw.set_state("api", starting=True)

    async def call():
        async with client.post(f"http://127.0.0.1:{port}/api", data=b"hello") as r:
            return r.status, await r.read()

    pending = asyncio.ensure_future(call())
    while gw.api_in_flight("api") < 1:  # the request is waiting inside the gateway
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert not pending.done()
    gw.set_replicas("api", [up.replica])
    gw.set_state("api", starting=False)
    assert await asyncio.wait_for(pending, 2) == (200, b"hello")


async def test_an_api_waiting_for_a_gpu_answers_503_at_once_saying_so(upstreams, gateways, client):
    gw = gateways(no_replica_wait=60)
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 10)])
    gw.set_state("api", starting=True, waiting_for="a free GPU")
    t0 = time.monotonic()
    async with client.post(f"http://127.0.0.1:{port}/api", data=b"x") as r:
        assert r.status == 503 and r.headers["Retry-After"]
        assert (await r.json())["error"] == ("api 'api' is waiting for a free GPU: no replica can start until "
                                             "then; see `cortexd get api`")
    assert time.monotonic() - t0 < 20  # at once, not after no_replica_wait (60 s); generous for load
    up = await upstreams("r1")  # a GPU freed, a replica started and is ready: served again
    gw.set_replicas("api", [up.replica])
    gw.set_state("api", starting=False)
    async with client.post(f"http://127.0.0.1:{port}/api", data=b"hello") as r:
        assert r.status == 200 and await r.read() == b"hello"


async def test_api_in_error_answers_503_at_once(gateways, client):
    gw = gateways(no_replica_wait=60)
    port = free_port()
    await gw.configure([RouteConfig("api", "/api", port, 10)])
    # the daemon's reason carries the replica's last log lines (anything the predictor printed):
    # the gateway gets the kind of the failure only
    gw.set_state("api", starting=False, failure=Failure.CRASHED)
    t0 = time.monotonic()
    async with client.post(f"http://127.0.0.1:{port}/api", data=b"x") as r:
        assert r.status == 503
        body = await r.json()
        assert body == {"error": "the API is not ready: its predictor failed to start; see `cortexd get api`",
                        "request_id": r.headers["X-Request-Id"]}
    # at once, not after waiting no_replica_wait (60 s) for a replica; generous for load
    assert time.monotonic() - t0 < 20
    gw.set_state("api", starting=False, failure=Failure.OOM)
    async with client.post(f"http://127.0.0.1:{port}/api", data=b"x") as r:
        assert (await r.json())["error"] == ("the API is not ready: its predictor ran out of memory; "
                                             "see `cortexd get api`")


# -- upstream failures -----------------------------------------------------------------------


async def test_refused_connection_is_retried_on_another_replica(upstreams, gateways, client):
    up = await upstreams("live")
    dead = ("dead", "127.0.0.1", free_port())  # nothing listens there
    gw, base = await one_api(gateways, [dead, up.replica])
    for _ in range(4):  # round-robin: at least two of these try "dead" first
        async with client.post(base + "/api", data=b"x") as r:
            assert r.status == 200 and r.headers["X-Replica"] == "live"
    assert up.requests == 4
    assert gw.replica_in_flight("api", "dead") == 0 and gw.replica_in_flight("api", "live") == 0


async def test_only_replica_refusing_gives_502(gateways, client):
    dead_port = free_port()
    _, base = await one_api(gateways, [("dead", "127.0.0.1", dead_port)])
    async with client.post(base + "/api", data=b"x") as r:
        assert r.status == 502
        error = (await r.json())["error"]
        # the replica and why, but not where replicas listen (that goes to the daemon's log)
        assert "replica dead is unreachable (Connection refused)" in error
        assert str(dead_port) not in error


async def test_disconnect_mid_response_is_502(gateways, client):
    raw = await RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial").start()
    try:
        gw, base = await one_api(gateways, [("r1", "127.0.0.1", raw.port)])
        async with client.post(base + "/api", data=b"x") as r:
            assert r.status == 502
            error = (await r.json())["error"]
            assert error.startswith("api 'api': replica r1: ")
            assert "before the response was complete" in error or "broke" in error
        assert gw.route("api").counters_snapshot()["5xx"] == 1
        assert gw.replica_in_flight("api", "r1") == 0
    finally:
        await raw.stop()


async def test_disconnect_mid_stream_truncates_the_response(gateways, client):
    raw = await RawUpstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                            then_wait=0.1).start()
    try:
        _, base = await one_api(gateways, [("r1", "127.0.0.1", raw.port)])
        async with client.post(base + "/api", data=b"x") as r:
            assert r.status == 200  # already sent when the replica broke
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()  # ...but the client can tell the body is incomplete
    finally:
        await raw.stop()


async def test_upstream_timeout_is_504(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica], upstream_timeout=0.3)
    t0 = time.monotonic()
    async with client.post(base + "/api?sleep=60", data=b"x") as r:
        assert r.status == 504
        assert "did not answer within 0.3 s" in (await r.json())["error"]
    # answered at the gateway's timeout, not when the replica would (60 s); generous for load
    assert time.monotonic() - t0 < 20
    assert gw.replica_in_flight("api", "r1") == 0
    async with client.post(base + "/api", data=b"ok") as r:  # the replica still serves
        assert r.status == 200


async def test_upstream_timeout_on_a_pooled_connection(upstreams, gateways, client):
    """A connection's one timer (upstream.py) bounds every wait on it: quick answers first (the
    timer armed by the first, moved on by the others), then a hang on the same pooled connection,
    both while that timer is still pending and after it lapsed."""
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica], upstream_timeout=0.3)
    for pause in (0.0, 0.5):  # 0.5: the timer armed by the quick answers has fired and lapsed
        for _ in range(3):
            async with client.post(base + "/api", data=b"ok") as r:
                assert r.status == 200
        await asyncio.sleep(pause)
        t0 = time.monotonic()
        async with client.post(base + "/api?sleep=60", data=b"x") as r:
            assert r.status == 504
            assert "did not answer within 0.3 s" in (await r.json())["error"]
        assert time.monotonic() - t0 < 20  # the gateway's timeout, not the replica's 60 s; generous for load
    assert gw.replica_in_flight("api", "r1") == 0


# -- routing across replicas ---------------------------------------------------------------


async def test_least_in_flight_spreads_across_replicas(upstreams, gateways, client):
    a, b = await upstreams("a"), await upstreams("b")
    gw, base = await one_api(gateways, [a.replica, b.replica])

    async def call(path):
        async with client.post(base + path, data=b"x") as r:
            return r.headers["X-Replica"]

    calls = [asyncio.ensure_future(call("/api?sleep=0.4")) for _ in range(4)]
    while gw.api_in_flight("api") < 4:
        await asyncio.sleep(0.01)
    assert (gw.replica_in_flight("api", "a"), gw.replica_in_flight("api", "b")) == (2, 2)
    assert sorted(await asyncio.gather(*calls)) == ["a", "a", "b", "b"]

    # idle replicas: ties go round-robin
    sequential = [await call("/api") for _ in range(4)]
    assert sorted(sequential) == ["a", "a", "b", "b"]


async def test_removed_replica_drains(upstreams, gateways, client):
    a, b = await upstreams("a"), await upstreams("b")
    gw, base = await one_api(gateways, [a.replica])

    async def call(path):
        async with client.post(base + path, data=b"x") as r:
            return r.status, r.headers["X-Replica"]

    slow = asyncio.ensure_future(call("/api?sleep=2"))  # still in flight after the switch, under load
    while gw.replica_in_flight("api", "a") < 1:
        await asyncio.sleep(0.01)
    gw.set_replicas("api", [b.replica])
    assert gw.replica_in_flight("api", "a") == 1  # draining, still counted
    assert await call("/api") == (200, "b")  # new requests go elsewhere
    assert await slow == (200, "a")  # the in-flight one completes on the old replica
    assert gw.replica_in_flight("api", "a") == 0


# -- ports ---------------------------------------------------------------------------------


async def test_two_apis_on_one_port(upstreams, gateways, client):
    a, b = await upstreams("a"), await upstreams("b")
    gw = gateways()
    port = free_port()
    await gw.configure([RouteConfig("a", "/a", port, 10), RouteConfig("b", "/deploy/b", port, 10)])
    gw.set_replicas("a", [a.replica])
    gw.set_replicas("b", [b.replica])
    base = f"http://127.0.0.1:{port}"
    async with client.post(base + "/a", data=b"1") as r:
        assert r.headers["X-Replica"] == "a"
    async with client.post(base + "/deploy/b/?q=1", data=b"2") as r:
        assert r.headers["X-Replica"] == "b" and r.headers["X-Seen-Path"] == "/?q=1"
    async with client.post(base + "/", data=b"3") as r:  # "/" is only for an API alone on its port
        assert r.status == 404
    assert gw.ports == [port]


async def test_api_alone_on_its_port_is_also_served_at_root(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica], endpoint="/iris-classifier")
    for path in ("/", "/iris-classifier", "/?a=b"):
        async with client.post(base + path, data=b"x") as r:
            assert r.status == 200, path


async def test_configure_moves_an_api_to_another_port(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"x") as r:
        assert r.status == 200
    route = gw.route("api")
    new_port = free_port()
    await gw.configure([RouteConfig("api", "/api", new_port, 10)])
    assert gw.ports == [new_port]
    async with client.post(f"http://127.0.0.1:{new_port}/api", data=b"x") as r:
        assert r.status == 200  # replicas were kept across configure()
    assert gw.route("api") is route and route.counters_snapshot()["total"] == 2  # counters kept
    async with aiohttp.ClientSession() as fresh:  # a new connection to the old port is refused
        with pytest.raises(aiohttp.ClientConnectionError):
            async with fresh.post(base + "/api", data=b"x"):
                pass


async def test_port_in_use_is_a_clear_error(gateways):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        gw = gateways()
        with pytest.raises(CortexdError) as e:
            await gw.configure([RouteConfig("api", "/api", port, 10)])
        assert str(e.value) == (f"port {port} is already in use on 127.0.0.1; "
                                "set networking.local_port or stop the other program")
        assert gw.ports == []


async def test_close_drains_in_flight_requests(upstreams, gateways, client):
    up = await upstreams("r1")
    gw, base = await one_api(gateways, [up.replica])

    async def call():
        async with client.post(base + "/api?sleep=0.3", data=b"x") as r:
            return r.status

    pending = asyncio.ensure_future(call())
    while gw.api_in_flight("api") < 1:
        await asyncio.sleep(0.01)
    await gw.close(drain_timeout=5)
    assert await pending == 200
    assert gw.api_in_flight("api") == 0


# -- request ids and forwarding headers (issue 9.14) ----------------------------------------


async def test_malformed_client_request_ids_are_replaced(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    kept = "req-1.2:abc_DEF"
    async with client.post(base + "/api", data=b"x", headers={"X-Request-Id": kept}) as r:
        assert r.headers["X-Request-Id"] == kept == r.headers["X-Seen-Request-Id"]
    for bad in ("x" * 129, "a b", "evil\tline", "<script>", "a,b"):
        async with client.post(base + "/api", data=b"x", headers={"X-Request-Id": bad}) as r:
            rid = r.headers["X-Request-Id"]
            assert rid != bad and rid == r.headers["X-Seen-Request-Id"]
            assert r.headers.getall("X-Request-Id") == [rid]
    async with client.get(base + "/nowhere", headers={"X-Request-Id": "y" * 500}) as r:
        body = await r.json()
        assert r.status == 404 and body["request_id"] == r.headers["X-Request-Id"] != "y" * 500


async def test_forwarding_headers_name_the_client(upstreams, gateways, client):
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"x") as r:
        assert r.status == 200
    seen = up.seen_headers[-1]
    assert seen["X-Forwarded-For"] == "127.0.0.1" and seen["X-Real-IP"] == "127.0.0.1"
    assert seen["Forwarded"] == "for=127.0.0.1"
    # a client's claims: X-Forwarded-For and Forwarded are appended to, X-Real-IP replaced
    async with client.post(base + "/api", data=b"x", headers={
            "X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Real-IP": "1.2.3.4",
            "Forwarded": "for=203.0.113.7;proto=https"}) as r:
        assert r.status == 200
    seen = up.seen_headers[-1]
    assert seen["X-Forwarded-For"] == "203.0.113.7, 10.0.0.1, 127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["Forwarded"] == "for=203.0.113.7;proto=https, for=127.0.0.1"
    # Forwarded alone is appended to too; X-Forwarded-For then names only the client
    async with client.post(base + "/api", data=b"x", headers={"Forwarded": "for=6.6.6.6"}) as r:
        assert r.status == 200
    seen = up.seen_headers[-1]
    assert seen["Forwarded"] == "for=6.6.6.6, for=127.0.0.1" and seen["X-Forwarded-For"] == "127.0.0.1"


async def test_connection_tokens_never_strip_host(upstreams, gateways, client):
    # `Connection: Host, X-Secret` makes X-Secret hop-by-hop (dropped), but the replica still
    # gets the Host it needs to answer an HTTP/1.1 request
    up = await upstreams("r1")
    _, base = await one_api(gateways, [up.replica])
    async with client.post(base + "/api", data=b"x", headers={
            "Connection": "Host, X-Secret", "X-Secret": "s3cr3t"}) as r:
        assert r.status == 200
    seen = up.seen_headers[-1]
    assert "Host" in seen and "X-Secret" not in seen


# -- raw clients: HTTP/1.0, malformed requests, slow clients ----------------------------------


async def raw_request(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the gateway closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def test_http10_without_host_is_served(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    port = gw.ports[0]
    answer = await raw_request(port, b"POST /api HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.0 200 "), answer[:200]
    assert answer.endswith(b"\r\n\r\nhello")
    assert up.seen_headers[-1]["Host"] == f"127.0.0.1:{up.port}"  # the replica needs one on 1.1


async def test_an_absolute_form_target_reaches_its_api_with_its_authority_as_host(upstreams, gateways):
    # RFC 9112 3.2.2: a server must accept `POST http://host/api`, and the target's authority
    # stands for the Host header
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    port = gw.ports[0]
    answer = await raw_request(port, f"POST http://models.example:{port}/api HTTP/1.1\r\nHost: elsewhere\r\n"
                                     "Content-Length: 5\r\nConnection: close\r\n\r\nhello".encode())
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nhello"), answer[:200]
    assert up.seen_headers[-1]["Host"] == f"models.example:{port}"


async def test_malformed_requests_get_json_400_and_few_log_lines(upstreams, gateways, caplog):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    port = gw.ports[0]
    caplog.set_level("DEBUG")
    junk = b"GARBAGE" + b"\x00\xff" * 2000 + b"\r\n\r\n"
    answers = [await raw_request(port, junk) for _ in range(50)]
    answers += [await raw_request(port, b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
                for _ in range(50)]
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] in (b"HTTP/1.0 400 Bad Request", b"HTTP/1.1 400 Bad Request"), answer[:200]
        assert b"Connection: close" in head or head.startswith(b"HTTP/1.0")
        error = json.loads(body)
        assert error["error"].startswith("the request is not valid HTTP") and error["request_id"]
        assert len(body) < 400  # the client's bytes are not echoed back whole
    records = [r for r in caplog.records if r.levelno >= 20]
    assert not [r for r in records if r.name.startswith("aiohttp")]  # aiohttp's traceback lines
    # one line per kind (the first of each), no traceback, the raw bytes cut short
    assert 1 <= len(records) <= 2, [r.getMessage()[:100] for r in records]
    for r in records:
        assert r.exc_info is None and len(r.getMessage()) < 400
    async with aiohttp.ClientSession() as session, \
            session.post(f"http://127.0.0.1:{port}/api", data=b"ok") as r:  # the port still serves
        assert (r.status, await r.read()) == (200, b"ok")


async def test_slow_request_head_gets_408_and_is_closed(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica], client_header_timeout=0.5)
    port = gw.ports[0]
    t0 = time.monotonic()
    # the read timeout (20 s) is the generous upper bound: below the default 60 s header timeout
    answer = await raw_request(port, b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Le", timeout=20)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert "within 0.5 s" in error and "client header timeout" in error, error
    assert time.monotonic() - t0 > 0.4  # not before the timeout (load only makes this longer)
    answer = await raw_request(port, b"")  # a connection that never sends anything: the same
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert up.requests == 0


async def test_kept_alive_connection_outlives_the_header_timeout(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica], client_header_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports[0])
    try:
        for i in range(3):  # idle between requests for longer than the header timeout: kept
            body = b"hello%d" % i
            # head and body in separate segments, as many clients send them
            writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(body)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            assert await reader.readexactly(length) == body
            await asyncio.sleep(0.5)
    finally:
        writer.close()


async def test_slow_bodies_get_408_and_hold_no_replica_slot(upstreams, gateways, client):
    up = await upstreams("r1")
    # 3 s: a loaded machine serves the real clients below before the slow ones time out
    gw, base = await one_api(gateways, [up.replica], max_concurrency=1, client_body_timeout=3.0)
    port = gw.ports[0]

    async def slow_client() -> tuple[int, asyncio.Future]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()

        async def answer() -> bytes:
            try:  # 20 s: the generous upper bound, below the default 60 s body timeout
                return await asyncio.wait_for(reader.read(), 20)
            finally:
                writer.close()

        return writer.get_extra_info("sockname")[1], asyncio.ensure_future(answer())

    t0 = time.monotonic()
    slow = [await slow_client() for _ in range(8)]
    deadline = time.monotonic() + 20
    # the gateway accepted all 8 and read their heads and body starts: the slow requests are in
    while not server_has_read(os.getpid(), port, {p for p, _ in slow}):
        assert time.monotonic() < deadline, "the gateway did not take the slow connections in"
        await asyncio.sleep(0.01)
    for _ in range(5):  # max_replica_concurrency=1, yet real clients are served
        async with client.post(base + "/api", data=b"real") as r:
            assert (r.status, await r.read()) == (200, b"real")
    assert gw.api_in_flight("api") == 0  # bodies still on their way hold nothing
    assert not any(a.done() for _, a in slow)  # ...and were still on their way: the checks counted
    for answer in await asyncio.gather(*(a for _, a in slow)):
        assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer
        assert "client body timeout" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert time.monotonic() - t0 > 2.9  # not before the timeout (load only makes this longer)
    assert up.requests == 5


async def test_slow_streamed_body_gets_408(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica], client_body_timeout=0.5, request_buffer_size=1024)
    answer = await raw_request(
        gw.ports[0], b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert gw.api_in_flight("api") == 0 and gw.replica_in_flight("api", "r1") == 0
    assert up.bodies == 0  # the replica never got a whole (made-up) body


# -- closing under keep-alive load (issue 9.8) ------------------------------------------------


async def keep_alive_client(port: int, stop: asyncio.Event, outcomes: list) -> None:
    """Send requests on one kept-alive connection until told to stop or told to close.

    Appends one outcome per request sent: 200, 503-close, or "cut" (no complete answer).
    A connection refused before anything was sent is not a request.
    """
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return  # not accepting any more: nothing was sent
        try:
            while not stop.is_set():
                writer.write(b"POST /api?sleep=0.02 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await asyncio.wait_for(reader.readexactly(length), 10)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    outcomes.append("cut")
                    return
                status = int(head.split(b" ")[1])
                closing = b"connection: close" in head.lower()
                outcomes.append(f"{status}{'-close' if closing else ''}")
                if closing:
                    break
        finally:
            writer.close()


async def test_close_under_keep_alive_load_cuts_nothing(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    port = gw.ports[0]
    stop = asyncio.Event()
    outcomes: list[str] = []
    clients = [asyncio.ensure_future(keep_alive_client(port, stop, outcomes)) for _ in range(8)]
    await asyncio.sleep(0.5)
    for _ in range(200):  # close while requests are in flight
        if gw.api_in_flight("api"):
            break
        await asyncio.sleep(0.005)
    assert gw.api_in_flight("api") > 0, outcomes
    await gw.close(drain_timeout=5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), 10)
    assert "cut" not in outcomes, outcomes
    assert outcomes.count("200") > 8
    assert set(outcomes) <= {"200", "200-close", "503-close"}, set(outcomes)
    assert outcomes.count("200-close") + outcomes.count("503-close") >= 8  # every client was told


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
async def test_a_request_line_of_another_http_version_gets_505_on_http11(upstreams, gateways, version):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    port = gw.ports[0]
    answer = await raw_request(port, b"POST /api " + version + b"\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), answer[:200]
    assert json.loads(body)["error"] == f"{version.decode()} is not spoken here: send HTTP/1.1 (or HTTP/1.0)"
    assert up.seen_headers == []  # never forwarded
    # pipelined behind a good request: that one is answered, then the connection closes
    answer = await raw_request(port, b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
                                     b"POST /api " + version + b"\r\nHost: x\r\nContent-Length: 2\r\n\r\nno")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer[-200:]
    assert answer.count(b"HTTP/1.") == 1


async def test_a_client_that_reads_slowly_makes_the_gateway_buffer_no_large_answer(upstreams, gateways):
    up = await upstreams("r1")
    gw, _ = await one_api(gateways, [up.replica])
    size = 16 * 2**20  # echoed back: an answer past the relay's buffer limit streams
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.ports[0]))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    try:
        writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        deadline = time.monotonic() + 10
        while up.bodies < 1:  # the replica has the whole body and is answering; the client reads nothing
            assert time.monotonic() < deadline, "the replica never got the body"
            await asyncio.sleep(0.01)
        (conn,) = gw.clients.connections()
        for _ in range(20):  # while the answer waits for the client, the gateway holds little of it
            await asyncio.sleep(0.02)
            assert conn.transport.get_write_buffer_size() <= 2**20
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % size in head, head
        assert await asyncio.wait_for(reader.readexactly(size), 20) == b"x" * size
    finally:
        writer.close()
