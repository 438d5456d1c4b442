"""The replica runtime's cost per request, against the bare aiohttp server and other HTTP layers.

Run by hand (never a test):

    python bench/runtime.py                              # this tree, 5 s runs, concurrency 32, 3 rounds
    python bench/runtime.py --base /tmp/main-checkout    # also the runtime of another tree, same run
    python bench/runtime.py --servers bare,sync,async,granian,uvicorn,httptools --rounds 5

Each server is its own process on a loopback port; wrk (one thread, a static POST of a small
JSON body) loads one at a time, the servers interleaved round by round so a busy machine
slows them alike. Per server: req/s, p50/p99, and the server process's CPU time per request
from /proc (the least noisy figure on a shared machine); medians over the rounds, and each
req/s and CPU figure as a ratio to the bare aiohttp server of the same run.

Servers (`--servers`, comma-separated):
  bare      aiohttp's low-level server answering a small JSON (bench/gateway.py's raw upstream):
            the reference, what one aiohttp exchange costs
  sync      `python -m predictor_runtime` with a no-op sync PythonPredictor (threads_per_process 1)
  async     the same with `async def predict`
  base-sync, base-async   the same from the tree given by --base (before/after in one run)
  aiohttp-thread  the bare server plus what any runtime must do for a sync predictor: parse the
            JSON body, run predict on a thread (the runtime's PredictThreads), encode the answer
  granian   the same work on granian's RSGI interface (needs `pip install granian`)
  uvicorn   the same work as a raw ASGI app on uvicorn with httptools and uvloop (needs uvicorn)
  httptools the same work on a minimal asyncio.Protocol of its own framing requests with httptools
            (keep-alive, Content-Length answers, a task per request; none of the runtime's rules)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import (  # the shared load generator and no-op replica
    NOOP_PREDICTOR,
    PAYLOAD,
    cpu_seconds,
    free_port,
    run_wrk,
    start_runtime,
    stop_all,
    wait_http,
)

REPO = Path(__file__).resolve().parents[1]

ASYNC_PREDICTOR = NOOP_PREDICTOR.replace("def predict", "async def predict")


# -- candidate HTTP layers: the same work a runtime does for a sync predictor ------------------

def _predict(payload: object) -> dict:
    return {"ok": True}


def predict_threads() -> Any:
    """The runtime's own thread hand-off (one thread), so each candidate does the runtime's work."""
    sys.path.insert(0, str(REPO))
    from predictor_runtime.predict_threads import PredictThreads

    return PredictThreads(1)


def serve_aiohttp_thread(port: int) -> None:
    import asyncio

    import uvloop
    from aiohttp import web

    pool = predict_threads()

    async def handler(request: web.BaseRequest) -> web.Response:
        payload = json.loads(await request.read())
        result = await pool.run(_predict, payload)
        return web.Response(body=json.dumps(result).encode(), content_type="application/json")

    async def main() -> None:
        server = web.Server(handler, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


_pool: Any = None


async def granian_app(scope, proto) -> None:  # type: ignore[no-untyped-def]
    """The RSGI app granian serves (granian imports it by name: `runtime:granian_app`)."""
    global _pool
    if _pool is None:
        _pool = predict_threads()
    payload = json.loads(await proto())
    result = await _pool.run(_predict, payload)
    proto.response_bytes(200, [("content-type", "application/json")], json.dumps(result).encode())


def serve_granian(port: int) -> None:
    from granian.constants import Interfaces, Loops
    from granian.server import Server

    Server("runtime:granian_app", address="127.0.0.1", port=port, interface=Interfaces.RSGI, workers=1,
           runtime_threads=1, loop=Loops.uvloop, log_enabled=False, backlog=1024,
           working_dir=Path(__file__).resolve().parent).serve()


def serve_uvicorn(port: int) -> None:
    import uvicorn

    pool = predict_threads()
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json")]}

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        result = await pool.run(_predict, json.loads(body))
        await send(start)
        await send({"type": "http.response.body", "body": json.dumps(result).encode()})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                access_log=False, log_level="warning", backlog=1024)


class _HttptoolsProtocol:
    """One connection: httptools frames requests (URL, raw headers and body kept, as a runtime must:
    query parameters, Content-Type, headers for predictors that ask); each complete one becomes a
    task that parses the JSON, runs predict on PredictThreads and writes the answer."""

    def __init__(self, pool: Any) -> None:
        import httptools

        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.transport: Any = None
        self.task: Any = None  # the answer being made (the loop keeps only a weak reference)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: object) -> None:
        self.transport = None

    def eof_received(self) -> None:
        pass

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        import asyncio

        import httptools

        url = httptools.parse_url(self.url)
        body, self.body, headers, self.headers, self.url = b"".join(self.body), [], self.headers, [], b""
        self.task = asyncio.ensure_future(self.answer(self.parser.get_method(), url.query, headers, body,
                                                      self.parser.should_keep_alive()))

    async def answer(self, method: bytes, query: bytes | None, headers: list[tuple[bytes, bytes]],
                     body: bytes, keep_alive: bool) -> None:
        content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
        payload = json.loads(body) if content_type.startswith(b"application/json") else body
        result = await self.pool.run(_predict, payload) if method == b"POST" else {"usage": "POST"}
        answer = json.dumps(result).encode()
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%b" % (len(answer), answer))
            if not keep_alive:
                self.transport.close()


def serve_httptools(port: int) -> None:
    import asyncio

    import uvloop

    pool = predict_threads()

    async def main() -> None:
        await asyncio.get_running_loop().create_server(lambda: _HttptoolsProtocol(pool), "127.0.0.1",
                                                       port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


SERVE = {"aiohttp-thread": serve_aiohttp_thread, "granian": serve_granian, "uvicorn": serve_uvicorn,
         "httptools": serve_httptools}


# -- the run ---------------------------------------------------------------------------------

def starter(name: str, base: Path | None, tmp: Path) -> Callable[[int], subprocess.Popen]:
    """How to start server `name` on a port."""
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if name == "bare":
        return lambda port: subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "gateway.py"), "--serve-raw-upstream", str(port)], **quiet)
    if name in ("sync", "async", "base-sync", "base-async"):
        tree = REPO
        if name.startswith("base-"):
            if base is None:
                raise SystemExit(f"{name} needs --base TREE")
            tree = base
        source = ASYNC_PREDICTOR if name.endswith("async") else NOOP_PREDICTOR
        return lambda port: start_runtime(port, tmp / name, tree, source, quiet=True)
    if name in SERVE:
        return lambda port: subprocess.Popen([sys.executable, __file__, "--serve", name, str(port)], **quiet)
    raise SystemExit(f"unknown server {name!r}")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian serves from a child process)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
        except OSError:
            pass
    return found


def tree_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def measure(url: str, pid: int, concurrency: int, duration: float, script: Path) -> dict:
    run_wrk(url, concurrency, min(1.0, duration), script)  # warm-up: connections, caches
    pids = process_tree(pid)
    cpu0 = tree_cpu(pids)
    result = run_wrk(url, concurrency, duration, script)
    result["cpu_us"] = (tree_cpu(pids) - cpu0) / max(1, result["count"]) * 1e6
    return result


def report(names: list[str], results: dict[str, list[dict]]) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    ref = "bare" if "bare" in results else names[0]
    print(f"\n{'server':<15} {'req/s':>8} {'x bare':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'CPU us/req':>11} {'x bare':>7}  CPU us/req per round  errors")
    for name in names:
        rounds = " ".join(f"{r['cpu_us']:.0f}" for r in results[name])
        errors = sum(r["errors"] for r in results[name])
        print(f"{name:<15} {med(name, 'rps'):>8.0f} {med(name, 'rps') / med(ref, 'rps'):>7.2f} "
              f"{med(name, 'p50'):>7.2f} {med(name, 'p99'):>7.2f} {med(name, 'cpu_us'):>11.1f} "
              f"{med(name, 'cpu_us') / med(ref, 'cpu_us'):>7.2f}  {rounds:<21}  {errors}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="bare,sync,async",
                   help="comma-separated (default bare,sync,async; base-sync,base-async with --base)")
    p.add_argument("--base", type=Path, help="another tree whose runtime to measure in the same run")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return SERVE[args.serve[0]](int(args.serve[1]))
    if shutil.which("wrk") is None:
        raise SystemExit("bench/runtime.py needs wrk (apt-get install wrk)")
    names = args.servers.split(",")
    if args.base is not None and args.servers == p.get_default("servers"):
        names += ["base-sync", "base-async"]

    tmp = Path(tempfile.mkdtemp(prefix="cortexd-bench-runtime-"))
    script = tmp / "post.lua"  # static request: wrk builds it once, no per-request Lua
    script.write_text(f'wrk.method = "POST"\nwrk.body = \'{PAYLOAD.decode()}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    try:
        for name in names:
            port = free_port()
            procs[name] = starter(name, args.base, tmp)(port)
            urls[name] = f"http://127.0.0.1:{port}/bench"
            wait_http(urls[name], procs[name])
        print(f"wrk -t1 -c{args.concurrency}, {args.duration:g} s per run, {args.rounds} rounds, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        results: dict[str, list[dict]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name in names:
                results[name].append(measure(urls[name], procs[name].pid, args.concurrency,
                                             args.duration, script))
        report(names, results)
    finally:
        # granian serves from a child process that outlives its parent and ignores SIGTERM:
        # end it by its PID, collected while the parent still ran
        children = [child for proc in procs.values() if proc.poll() is None
                    for child in process_tree(proc.pid)[1:]]
        stop_all(procs.values())
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
