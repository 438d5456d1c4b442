"""The Gateway against bare httptools proxies: what its rules and its design cost over the floor.

Run by hand (never a test):

    python bench/proxy_floor.py                   # 4 alternated rounds, wrk -c32, 4 s each
    python bench/proxy_floor.py --rounds 6 --duration 8

One no-op replica (`bench/gateway.py`'s raw upstream: aiohttp's low-level server) behind two
proxies, in processes of their own on uvloop: the Gateway as the daemon runs it (its own
httptools protocol on the client side since issue 20.1; aiohttp's `web.Server` before), and a
bare proxy made here, an `asyncio.Protocol` framing requests with httptools and forwarding them
through the Gateway's own `UpstreamPool` (cortexd/gateway/upstream.py) and
`relay.response_headers`, with one coroutine per connection and no task per request. The bare
proxy has none of the gateway's rules (routes, limits, timeouts, budgets, errors, streaming): it
measures the floor of the gateway's design, not a candidate. A third, `callbacks`, has no coroutine,
future or task at all (each client connection with a replica connection of its own, a request
written from one protocol's `data_received` and its answer from the other's): the floor of a
Python proxy on uvloop and httptools, whatever its design. Prints each proxy's CPU time per
request and that CPU over the replica's in the same run (the figure that moves least on a shared
machine). Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from gateway import PAYLOAD, cpu_seconds, free_port, wait_http  # bench/gateway.py

from cortexd.gateway.relay import STATUS_LINES


def request_bytes(method: bytes, headers: list, body: bytes) -> bytes:
    """The request to the replica, framed by Content-Length (both bare proxies)."""
    lines = [method + b" / HTTP/1.1"]
    lines += [n + b": " + v for n, v in headers if n.lower() not in (b"content-length", b"connection")]
    lines += [b"X-Request-Id: bench", b"Content-Length: %d" % len(body), b"\r\n"]
    return b"\r\n".join(lines) + body


def answer_bytes(status: int, headers: list, body: bytes) -> bytes:
    """The answer to the client, framed by Content-Length (both bare proxies)."""
    out = [b"HTTP/1.1 " + STATUS_LINES[status]] + [n + b": " + v for n, v in headers]
    out += [b"X-Request-Id: bench", b"Content-Length: %d" % len(body), b"\r\n"]
    return b"\r\n".join(out) + body


class Gathering(asyncio.Protocol):
    """httptools callbacks that gather a message's headers and body (a request's or a response's)."""

    parser: Any
    headers: list
    body: list

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body.append(body)


def serve_bare_proxy(port: int, upstream: int) -> None:
    import httptools
    import uvloop

    from cortexd.gateway.relay import response_headers
    from cortexd.gateway.upstream import UpstreamPool

    class BareProxy(Gathering):
        def __init__(self, pool: UpstreamPool):
            self.pool = pool
            self.requests: deque = deque()
            self.waiter: asyncio.Future | None = None

        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.headers: list = []
            self.body: list = []
            self.task = asyncio.get_running_loop().create_task(self.serve())

        def connection_lost(self, exc):
            self.task.cancel()

        def on_message_complete(self):
            self.requests.append((self.parser.get_method(), self.headers, b"".join(self.body)))
            self.headers, self.body = [], []
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

        async def serve(self):
            loop = asyncio.get_running_loop()
            while True:
                if not self.requests:
                    self.waiter = loop.create_future()
                    await self.waiter
                method, headers, body = self.requests.popleft()
                conn = self.pool.take_idle() or await self.pool.connect()
                conn.begin()
                conn.write(request_bytes(method, headers, body))
                await conn.wait_head(60)
                kept, _ = response_headers(conn.headers)
                answer = conn.take_body()
                status = conn.status
                self.pool.release(conn)
                self.transport.write(answer_bytes(status, kept, answer))

    async def main():
        pool = UpstreamPool("127.0.0.1", upstream)
        await asyncio.get_running_loop().create_server(lambda: BareProxy(pool), "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_callback_proxy(port: int, upstream: int) -> None:
    """The floor of a proxy with no coroutine at all: each client connection has one replica
    connection of its own, a request is written to it from the client's `data_received` and the
    answer to the client from the replica's; no future, no task, no timer. One request at a time
    per connection (wrk does not pipeline); none of the gateway's rules."""
    import httptools
    import uvloop

    from cortexd.gateway.relay import response_headers

    class ReplicaSide(Gathering):
        def __init__(self, client: ClientSide):
            self.client = client
            self.parser = httptools.HttpResponseParser(self)
            self.transport: asyncio.Transport | None = None
            self.pending: list[bytes] = []
            self.headers: list = []
            self.body: list = []

        def connection_made(self, transport):
            self.transport = transport
            for data in self.pending:
                transport.write(data)
            self.pending.clear()

        def connection_lost(self, exc):
            self.transport = None
            self.client.replica_lost()

        def send(self, data: bytes) -> None:
            if self.transport is None:
                self.pending.append(data)
            else:
                self.transport.write(data)

        def on_message_complete(self):
            kept, _ = response_headers(self.headers)
            self.client.answer(self.parser.get_status_code(), kept, b"".join(self.body))
            self.headers, self.body = [], []

    class ClientSide(Gathering):
        def connection_made(self, transport):
            self.transport: asyncio.Transport | None = transport
            self.parser = httptools.HttpRequestParser(self)
            self.headers: list = []
            self.body: list = []
            self.replica = ReplicaSide(self)
            self.opening = asyncio.get_running_loop().create_task(asyncio.get_running_loop().create_connection(
                lambda: self.replica, "127.0.0.1", upstream))

        def connection_lost(self, exc):
            self.transport = None
            self.opening.cancel()
            if self.replica.transport is not None:
                self.replica.transport.close()

        def replica_lost(self) -> None:
            if self.transport is not None:
                self.transport.close()

        def on_message_complete(self):
            request = request_bytes(self.parser.get_method(), self.headers, b"".join(self.body))
            self.headers, self.body = [], []
            self.replica.send(request)

        def answer(self, status: int, headers: list, body: bytes) -> None:
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(answer_bytes(status, headers, body))

    async def main():
        await asyncio.get_running_loop().create_server(ClientSide, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per run (default 4)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-callbacks", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve_bare_proxy(*args.serve)
    if args.serve_callbacks:
        return serve_callback_proxy(*args.serve_callbacks)
    gateway_py = str(HERE / "gateway.py")
    up, gw, bare, cb = free_port(), free_port(), free_port(), free_port()
    replica = subprocess.Popen([sys.executable, gateway_py, "--serve-raw-upstream", str(up)])
    proxies = {"gateway": (f"http://127.0.0.1:{gw}/bench",
                           subprocess.Popen([sys.executable, gateway_py, "--serve-gateway", str(gw), str(up)])),
               "bare": (f"http://127.0.0.1:{bare}/", subprocess.Popen([sys.executable, __file__, "--serve", str(bare),
                                                                       str(up)])),
               "callbacks": (f"http://127.0.0.1:{cb}/", subprocess.Popen(
                   [sys.executable, __file__, "--serve-callbacks", str(cb), str(up)]))}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = \'{PAYLOAD.decode()}\'\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        try:
            for url, proc in proxies.values():
                wait_http(url, proc)
            time.sleep(0.5)
            for r in range(args.rounds):
                for name in list(proxies)[::-1 if r % 2 else 1]:
                    url, proc = proxies[name]
                    cpu0, rep0 = cpu_seconds(proc.pid), cpu_seconds(replica.pid)
                    out = subprocess.run(["wrk", "-t1", f"-c{args.concurrency}", f"-d{args.duration:g}s",
                                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
                    count = max(1, int(re.search(r"(\d+) requests in", out).group(1)))
                    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                    used = (cpu_seconds(proc.pid) - cpu0) / count * 1e6
                    rep = (cpu_seconds(replica.pid) - rep0) / count * 1e6
                    print(f"{name:>9}: {rps:8.0f} req/s, {used:6.1f} us CPU per request, "
                          f"{used / max(rep, 1e-9):.2f}x the replica's", flush=True)
        finally:
            for proc in [p for _, p in proxies.values()] + [replica]:
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    main()
