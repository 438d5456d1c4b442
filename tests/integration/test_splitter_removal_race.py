"""A traffic splitter's api removed while requests it chose are still arriving (the 503 that
tests/integration/test_traffic_splitter.py's removed-under-load test once got): a request whose
body comes after its head is chosen a target when its head arrives; if that api is removed before
the body is in, the request goes to a live api of the splitter, never 503 "was deleted"."""

from __future__ import annotations

import asyncio

import pytest

from cortexd.gateway.proxy import Gateway
from cortexd.gateway.routes import RouteConfig, SplitConfig
from tests.real_daemon import free_port, wait_until
from tests.upstreams import Upstream

pytestmark = pytest.mark.timeout(30)

HEAD = "POST /ab HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"


async def test_a_request_whose_api_goes_before_its_body_comes_goes_to_a_live_api():
    a, b = await Upstream("a").start(), await Upstream("b").start()
    gw = Gateway("127.0.0.1")
    port = free_port()
    routes = [RouteConfig("a", "/a", port, 100), RouteConfig("b", "/b", port, 100)]
    split = SplitConfig("ab", "/ab", port, (("a", 50, False), ("b", 50, False)))
    try:
        await gw.configure(routes, [split])
        for name, up in (("a", a), ("b", b)):
            gw.set_replicas(name, [(f"{name}-1", "127.0.0.1", up.port)])
            gw.set_state(name, starting=False)
        (splitter,) = gw.splits()
        chosen = []
        pick = splitter.rng
        splitter.rng = lambda: chosen.append(1) or pick()  # counts the choices made
        clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, writer in clients:  # heads only: each request is given a target, its body pending
            writer.write(HEAD.encode())
            await writer.drain()
        await asyncio.to_thread(wait_until, lambda: len(chosen) == 20, 10, "20 requests given a target")
        await gw.configure(routes[:1], [split])  # b removed; the splitter stays as it was
        for _, writer in clients:
            writer.write(b"{}")
            await writer.drain()
        answers = [(await reader.readuntil(b"\r\n")).decode().strip() for reader, _ in clients]
        assert set(answers) == {"HTTP/1.1 200 OK"}, answers
        assert b.bodies == 0 and a.bodies == 20  # b's share went to a
        for _, writer in clients:
            writer.close()
    finally:
        await gw.close(drain_timeout=1)
        await a.stop()
        await b.stop()
