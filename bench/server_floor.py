"""The floor under the gateway's server side: aiohttp's low-level server against a bare httptools protocol.

Run by hand (never a test):

    python bench/server_floor.py                  # 3 alternated rounds, wrk -c32, 4 s each
    python bench/server_floor.py --rounds 5 --duration 8

Two no-op servers answer the same small JSON POST (`bench/gateway.py`'s request): aiohttp's
low-level `web.Server` (what the gateway's client side is built on, and `bench/gateway.py`'s raw
upstream) and a bare `asyncio.Protocol` framing requests with httptools (what the gateway's
upstream side, `cortexd/gateway/upstream.py`, is built on). Both on uvloop, in processes of their
own, loaded in turn by wrk (one thread); prints req/s and each server's CPU time per request (the
least noisy figure on a shared machine). Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import PAYLOAD, cpu_seconds, free_port  # bench/gateway.py

ANSWER = b'{"ok": true}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (len(ANSWER), ANSWER))


def serve(kind: str, port: int) -> None:
    import httptools
    import uvloop

    class Bare(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_message_complete(self):
            self.transport.write(RESPONSE)

    async def main():
        loop = asyncio.get_running_loop()
        if kind == "httptools":
            await loop.create_server(Bare, "127.0.0.1", port, backlog=1024)
        else:
            from aiohttp import web

            async def handler(request):
                await request.read()
                return web.Response(body=ANSWER, content_type="application/json")

            await loop.create_server(web.Server(handler, access_log=None), "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per run (default 4)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        return serve(args.serve[0], int(args.serve[1]))
    kinds = ["aiohttp", "httptools"]
    ports = {kind: free_port() for kind in kinds}
    procs = {kind: subprocess.Popen([sys.executable, __file__, "--serve", kind, str(ports[kind])]) for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = \'{PAYLOAD.decode()}\'\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        try:
            time.sleep(3)  # both listening
            for r in range(args.rounds):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    cpu0 = cpu_seconds(procs[kind].pid)
                    out = subprocess.run(["wrk", "-t1", f"-c{args.concurrency}", f"-d{args.duration:g}s",
                                          "-s", str(script), f"http://127.0.0.1:{ports[kind]}/"],
                                         capture_output=True, text=True, check=True).stdout
                    count = int(re.search(r"(\d+) requests in", out).group(1))
                    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                    used = (cpu_seconds(procs[kind].pid) - cpu0) / max(1, count) * 1e6
                    print(f"{kind:>9}: {rps:8.0f} req/s, {used:6.1f} us CPU per request", flush=True)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(5)


if __name__ == "__main__":
    main()
