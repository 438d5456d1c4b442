"""cortexd end to end (gateway + replica runtime) against the bare aiohttp server, in one run (issue 20.3).

Run by hand (never a test):

    python bench/end_to_end.py                        # 3 alternated rounds, wrk -c32, 5 s each
    python bench/end_to_end.py --rounds 5 --duration 8 --concurrency 1,32
    python bench/end_to_end.py --base /tmp/main-tree  # adds another checkout's gateway + runtime

What a client sees: the same small JSON POST (bench/gateway.py's request, wrk with one thread)
sent to
- `bare`: aiohttp's low-level server on uvloop answering a small JSON, one process (bench/gateway.py's
  raw upstream): the reference, a server with no work and no second hop;
- `sync`: the Gateway (as the daemon runs it) in front of `python -m predictor_runtime` with a no-op
  `def predict` (threads_per_process 1), reaching it on a unix socket as it reaches a process replica;
- `async`: the same with `async def predict`;
- `tcp-sync` and `tcp-async`: the same two with the Gateway reaching the replica on its port (as it
  reaches a Docker replica, and every replica before the unix hop);
- with `--base`, `base-sync` and `base-async`: the same two from another checkout (its gateway and
  its runtime, on the port), for a before/after in the same run;
- with `--floors`, what bounds the ratio whatever the gateway costs: `direct-sync` and `direct-async`
  (the runtime alone, loaded with no gateway), `floor-sync` and `floor-async` (bench/proxy_floor.py's
  `callbacks` proxy in place of the Gateway: the floor of a Python proxy on uvloop, with no rules)
  and, where nginx is installed, `nginx-sync` and `nginx-async` (nginx, one process, pooled
  keep-alive to the replica, in place of the Gateway).
Each setup's processes are its own; the setups are loaded in turn, their order reversed every other
round. Prints, per run, req/s and its ratio to `bare` in the same round, p50/p99, and the CPU time
per request of the setup's processes (gateway + replica, or the bare server). Targets (issue 20.3):
sync >= 0.9x bare, async >= 1.0x at concurrency 32. Needs wrk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gateway import (  # bench/gateway.py
    NOOP_PREDICTOR,
    PAYLOAD,
    free_port,
    measure,
    start_gateways,
    start_runtime,
    stop_all,
    wait_http,
)

ASYNC_PREDICTOR = NOOP_PREDICTOR.replace("    def predict(", "    async def predict(")


NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream replica {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replica;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(upstream: int, workdir: Path, procs: list[subprocess.Popen]) -> tuple[str, int]:
    """nginx as the proxy in place of the Gateway: (its URL, its PID)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=workdir, upstream=upstream, port=port))
    procs.append(subprocess.Popen([shutil.which("nginx") or "nginx", "-c", str(conf), "-p", str(workdir)]))
    url = f"http://127.0.0.1:{port}/"
    wait_http(url, procs[-1])
    return url, procs[-1].pid


def start_setup(kind: str, tree: Path, tmp: Path, procs: list[subprocess.Popen]) -> tuple[str, list[int]]:
    """One setup's processes, serving before this returns: (the URL to load, the PIDs to count)."""
    if kind == "bare":
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(HERE / "gateway.py"), "--serve-raw-upstream", str(port)]))
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, procs[-1])
        return url, [procs[-1].pid]
    port = free_port()
    workdir = tmp / f"{kind}-{len(procs)}"
    proxy, _, predictor = kind.rpartition("-")
    unix = workdir / "sock" if proxy == "" and tree == HERE.parent else None  # --base: its own runtime, TCP
    procs.append(start_runtime(port, workdir, tree, ASYNC_PREDICTOR if predictor == "async" else NOOP_PREDICTOR,
                               quiet=True, unix=unix))
    wait_http(f"http://127.0.0.1:{port}/", procs[-1])
    replica = procs[-1].pid
    if proxy == "direct":
        return f"http://127.0.0.1:{port}/", [replica]
    if proxy == "floor":
        front = free_port()
        procs.append(subprocess.Popen([sys.executable, str(HERE / "proxy_floor.py"), "--serve-callbacks",
                                       str(front), str(port)]))
        wait_http(f"http://127.0.0.1:{front}/", procs[-1])
        return f"http://127.0.0.1:{front}/", [replica, procs[-1].pid]
    if proxy == "nginx":
        url, pid = start_nginx(port, workdir / "nginx", procs)
        return url, [replica, pid]
    url, gateway = start_gateways(1, [port], "api", procs, tree / "bench" / "gateway.py",
                                  sockets=[str(unix)] if unix is not None else None)
    return url, [replica, *gateway]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--concurrency", default="32", help="comma-separated (default 32)")
    p.add_argument("--base", help="another checkout: its gateway and runtime run as base-sync, base-async")
    p.add_argument("--floors", action="store_true",
                   help="add the runtime alone (direct-*) and, where installed, nginx in front of it (nginx-*)")
    args = p.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="cortexd-e2e-"))
    procs: list[subprocess.Popen] = []
    setups = [("bare", HERE.parent), ("sync", HERE.parent), ("async", HERE.parent),
              ("tcp-sync", HERE.parent), ("tcp-async", HERE.parent)]
    if args.base:
        setups += [("base-sync", Path(args.base)), ("base-async", Path(args.base))]
    if args.floors:
        setups += [(f"{proxy}-{predictor}", HERE.parent)
                   for proxy in ("direct", "floor") for predictor in ("sync", "async")]
        if shutil.which("nginx"):
            setups += [("nginx-sync", HERE.parent), ("nginx-async", HERE.parent)]
        else:
            print("nginx is not installed: no nginx-* setups", file=sys.stderr)
    try:
        urls = {label: start_setup(label.removeprefix("base-"), tree, tmp, procs) for label, tree in setups}
        script = tmp / "post.lua"  # static request: wrk builds it once, no per-request Lua
        script.write_text(f'wrk.method = "POST"\nwrk.body = \'{PAYLOAD.decode()}\'\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        for c in (int(level) for level in args.concurrency.split(",")):
            ratios: dict[str, list[float]] = {label: [] for label in urls}
            for r in range(args.rounds):
                order = list(urls.items())[::-1 if r % 2 else 1]
                results = {label: measure(url, [pids], c, args.duration, script) for label, (url, pids) in order}
                bare = results["bare"][0]["rps"]
                for label, (result, (cpu,)) in sorted(results.items(), key=lambda kv: list(urls).index(kv[0])):
                    rps = result["rps"]
                    ratios[label].append(rps / bare)
                    print(f"c{c:<3} round {r + 1} {label:>12}: {rps:>8.0f} req/s  {rps / bare:>5.2f}x bare  "
                          f"p50 {result['p50']:.3f} ms  p99 {result['p99']:.3f} ms  "
                          f"{cpu:>6.1f} us CPU/req  errors {result['errors']}", flush=True)
            print(f"c{c} medians of the ratio to bare: "
                  + ", ".join(f"{label} {statistics.median(v):.2f}" for label, v in ratios.items()))
    finally:
        stop_all(reversed(procs))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
