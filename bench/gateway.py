"""Gateway overhead: the same load straight to a no-op replica and through the Gateway.

Run by hand (never a test):

    python bench/gateway.py                      # 5 s per run, concurrency 1 and 32
    python bench/gateway.py --duration 10 --concurrency 1,8,32 --upstream raw
    python bench/gateway.py --route splitter     # through a traffic splitter (50/50 over two APIs)
    python bench/gateway.py --replicas 2 --workers 1,2   # 1 gateway process against 2 (GatewayWorkers)
    python bench/gateway.py --upstream raw --replicas 8 --workers 1,8 --concurrency 256 --wrk-threads 4
                                                          # a many-core host (bench/gpu_check.py runs it)
    python bench/gateway.py --base ../main --rounds 4    # this tree's gateway beside another checkout's

Three processes: the replica (`--upstream runtime`: the real predictor_runtime with
a no-op PythonPredictor; `raw`: a minimal aiohttp low-level server; `auto`, the
default, picks runtime when predictor_runtime's server is importable), the
Gateway on uvloop as the daemon runs it, and the load generator (wrk when
installed, a static-request POST without per-request Lua; otherwise an asyncio
generator in its own process). Reports req/s both ways, the ratio, and the
p50/p99 latency the gateway adds. Targets (docs/architecture.md, "The gateway's hot
path"): ratio >= 0.9 at concurrency 32, added p50 <= 0.1 ms at concurrency 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = b'{"x": 1}'
WRK_THREADS = 1  # --wrk-threads: more than one where a single wrk thread would cap the gateways
LOAD_PROCS = 1  # --load-procs: asyncio generator processes, where there is no wrk and one would cap them

NOOP_PREDICTOR = '''
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"ok": True}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the processes ---------------------------------------------------------------------


def serve_raw_upstream(port: int) -> None:
    """A no-op replica: aiohttp's low-level server answering every request with a small JSON."""
    import uvloop
    from aiohttp import web

    async def handler(request):
        await request.read()
        return web.Response(body=b'{"ok": true}', content_type="application/json")

    async def main():
        server = web.Server(handler, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_gateway(port: int, upstream_ports: list[int], workers: int = 1, sockets: list[str] | None = None) -> None:
    """The Gateway as the daemon runs it (uvloop), routing /bench to the replicas.

    `workers` > 1: the daemon's GatewayWorkers (cortexd/gateway/workers.py), which starts
    `workers` - 1 gateway worker processes and deals them connections in turn (--workers)."""
    sys.path.insert(0, str(REPO))
    import uvloop

    from cortexd.gateway.proxy import Gateway
    from cortexd.gateway.routes import RouteConfig, SplitConfig

    async def main():
        if workers > 1:
            from cortexd.gateway.workers import GatewayWorkers

            gw = GatewayWorkers("127.0.0.1", workers=workers)
            await gw.start()
        else:
            gw = Gateway("127.0.0.1")
        # /bench: an API; /split: a traffic splitter sending half of its requests to each of two
        # APIs (bench and bench2), whose replicas are the same upstreams
        await gw.configure([RouteConfig("bench", "/bench", port, 30000), RouteConfig("bench2", "/bench2", port, 30000)],
                           [SplitConfig("split", "/split", port, (("bench", 50, False), ("bench2", 50, False)))])
        for api in ("bench", "bench2"):
            gw.set_replicas(api, [(f"r{i + 1}", "127.0.0.1", up, *(sockets[i:i + 1] if sockets else ()))
                                  for i, up in enumerate(upstream_ports)])
            gw.set_state(api, starting=False)
        if workers > 1:
            while not gw.applied():  # every worker serves the routes before the first request
                await asyncio.sleep(0.05)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await gw.close(drain_timeout=1)

    uvloop.run(main())


def start_runtime(port: int, workdir: Path, tree: Path = REPO, source: str = NOOP_PREDICTOR,
                  quiet: bool = False, unix: Path | None = None) -> subprocess.Popen:
    """`python -m predictor_runtime` from `tree` (the runtime's bench compares two) serving `source`;
    on the unix socket `unix` too, bound here and passed down as the process backend does."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "predictor.py").write_text(source)
    spec = {
        "name": "bench", "endpoint": "/bench", "project_dir": str(workdir),
        "predictor": {"type": "python", "path": str(workdir / "predictor.py"),
                      "python_path": str(workdir), "model_path": None, "signature_key": None,
                      "models": None, "server_side_batching": None,
                      "processes_per_replica": 1, "threads_per_process": 1, "config": {}},
        "monitoring": None,
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{workdir}"}
    output = subprocess.DEVNULL if quiet else None
    argv = [sys.executable, "-m", "predictor_runtime", "--spec", str(workdir / "spec.json"),
            "--host", "127.0.0.1", "--port", str(port)]
    if unix is None:
        return subprocess.Popen(argv, env=env, cwd=str(workdir), stdout=output, stderr=output)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(unix))
        return subprocess.Popen(argv + ["--unix-fd", str(sock.fileno())], env=env, cwd=str(workdir),
                                stdout=output, stderr=output, pass_fds=(sock.fileno(),))


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=PAYLOAD), timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout:g} s")


def stop_all(procs: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each process (by its own PID), then wait for it; SIGKILL after 5 s."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- load generation -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_children(pids: list[int]) -> list[int]:
    """`pids` and their descendants now (a runtime replica's worker processes; Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    family = list(pids)
    for pid in family:  # grows while it is walked: children, then theirs
        family.extend(child for child, parent in parents.items() if parent == pid)
    return family


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, concurrency: int, duration: float, script: Path) -> dict:
    out = subprocess.run(
        ["wrk", f"-t{min(WRK_THREADS, concurrency)}", f"-c{concurrency}", f"-d{duration:g}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "count": count, "p50": _ms(lat["50"]), "p99": _ms(lat["99"]),
            "errors": int(errors.group(1)) if errors else 0}


def asyncio_load(url: str, concurrency: int, duration: float) -> None:
    """Fallback generator (its own process): keep-alive POSTs over raw sockets; JSON to stdout."""
    import uvloop

    host, port, path = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(PAYLOAD)}\r\n\r\n").encode() + PAYLOAD

    async def worker(latencies: list[float], stop_at: float, errors: list[int]):
        reader, writer = await asyncio.open_connection(host, int(port))
        clock = time.perf_counter
        while clock() < stop_at:
            t0 = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            latencies.append(clock() - t0)
            if not head.startswith(b"HTTP/1.1 2"):
                errors.append(1)
        writer.close()

    async def main():
        latencies: list[float] = []
        errors: list[int] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(latencies, t0 + duration, errors) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        q = statistics.quantiles(latencies, n=100)
        print(json.dumps({"rps": len(latencies) / elapsed, "count": len(latencies),
                          "p50": q[49] * 1e3, "p99": q[98] * 1e3,
                          "errors": len(errors)}))

    uvloop.run(main())


def run_load(url: str, concurrency: int, duration: float, script: Path | None) -> dict:
    """One load run: wrk, or LOAD_PROCS asyncio generator processes sharing `concurrency` (their
    figures added; p50 the requests-weighted mean of theirs, p99 the highest)."""
    if script is not None:
        return run_wrk(url, concurrency, duration, script)
    procs = max(1, min(LOAD_PROCS, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    running = [subprocess.Popen([sys.executable, __file__, "--load", url, "--concurrency", str(share),
                                 "--duration", str(duration)], stdout=subprocess.PIPE, text=True) for share in shares]
    results = []
    for proc in running:
        out, _ = proc.communicate(timeout=duration + 60)
        if proc.returncode != 0:
            raise SystemExit(f"the load generator exited with {proc.returncode}")
        results.append(json.loads(out))
    count = sum(r["count"] for r in results)
    return {"rps": sum(r["rps"] for r in results), "count": count,
            "p50": sum(r["p50"] * r["count"] for r in results) / max(1, count),
            "p99": max(r["p99"] for r in results), "errors": sum(r["errors"] for r in results)}


# -- main ----------------------------------------------------------------------------------


def start_upstreams(kind: str, count: int, tmp: Path, procs: list[subprocess.Popen],
                    sockets: list[str] | None = None) -> list[int]:
    """`count` no-op replicas (`kind`: runtime or raw), each serving before this returns: their ports.
    `sockets` (runtime only): filled with the unix socket each serves on too."""
    ports = []
    for i in range(count):
        port = free_port()
        if kind == "runtime":
            workdir = tmp / f"replica{i}"
            workdir.mkdir()
            unix = workdir / "sock" if sockets is not None else None
            procs.append(start_runtime(port, workdir, unix=unix))
            if unix is not None and sockets is not None:
                sockets.append(str(unix))
        else:
            procs.append(subprocess.Popen([sys.executable, __file__, "--serve-raw-upstream", str(port)]))
        wait_http(f"http://127.0.0.1:{port}/", procs[-1])
        ports.append(port)
    return ports


def start_gateways(workers: int, upstreams: list[int], route: str, procs: list[subprocess.Popen],
                   bench: Path = Path(__file__), sockets: list[str] | None = None) -> tuple[str, list[int]]:
    """A gateway of `workers` processes (the daemon's GatewayWorkers when more than one): (URL, PIDs).

    `bench`: the bench/gateway.py whose gateway runs (another checkout's, for --base). `sockets`:
    the replicas' unix sockets, which it then uses (the process backend's hop)."""
    port = free_port()
    argv = [sys.executable, str(bench), "--serve-gateway", str(port), *map(str, upstreams)]
    if sockets:
        argv += ["--upstream-sockets", *sockets]
    procs.append(subprocess.Popen(argv + ([f"--gateway-workers={workers}"] if workers > 1 else [])))
    url = f"http://127.0.0.1:{port}/{'split' if route == 'splitter' else 'bench'}"
    wait_http(url, procs[-1])
    pids = with_children([procs[-1].pid])
    if len(pids) != workers:
        raise SystemExit(f"the gateway runs {len(pids)} processes, not {workers}")
    return url, pids


def measure(url: str, groups: list[list[int]], c: int, duration: float,
            script: Path | None) -> tuple[dict, list[float]]:
    """A warm-up, then a run: its figures and the CPU time per request of each group of processes."""
    run_load(url, c, min(1.0, duration), script)  # warm-up: connections, caches
    before = [sum(cpu_seconds(pid) for pid in pids) for pids in groups]
    result = run_load(url, c, duration, script)
    after = [sum(cpu_seconds(pid) for pid in pids) for pids in groups]
    return result, [(b - a) / max(1, result["count"]) * 1e6 for a, b in zip(before, after)]


def compare(levels: list[int], direct: str, gateways: dict[str, tuple[str, list[int]]], replicas: list[int],
            rounds: int, duration: float, script: Path | None) -> None:
    """Per level: the replica direct, then each gateway (`gateways`: label -> URL, PIDs), `rounds`
    times, the gateways' order reversed every other round; a line each."""
    print(f"{'conc':>4} {'gw':>4} {'direct req/s':>13} {'gateway req/s':>14} {'ratio':>6} "
          f"{'p50 added ms':>13} {'p99 added ms':>13} {'gw CPU us/req':>14} {'/replicas':>9}  errors")
    for c in levels:
        for r in range(rounds):
            d, _ = measure(direct, [], c, duration, script)
            for label, (url, pids) in list(gateways.items())[::-1 if r % 2 else 1]:
                g, (gw_cpu, rep_cpu) = measure(url, [pids, replicas], c, duration, script)
                print(f"{c:>4} {label:>4} {d['rps']:>13.0f} {g['rps']:>14.0f} {g['rps'] / d['rps']:>6.2f} "
                      f"{g['p50'] - d['p50']:>13.3f} {g['p99'] - d['p99']:>13.3f} {gw_cpu:>14.0f} "
                      f"{gw_cpu / max(rep_cpu, 1e-9):>9.2f}  {d['errors']}/{g['errors']}")
                print(f"          direct p50/p99 {d['p50']:.3f}/{d['p99']:.3f} ms; "
                      f"gateway p50/p99 {g['p50']:.3f}/{g['p99']:.3f} ms", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", choices=["auto", "runtime", "raw"], default="auto")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--concurrency", default="1,32", help="comma-separated (default 1,32)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto")
    p.add_argument("--route", choices=["api", "splitter"], default="api",
                   help="through the gateway to an API (default) or through a traffic splitter")
    p.add_argument("--workers", default="1",
                   help="gateway processes (the daemon's GatewayWorkers), comma-separated to compare (default 1)")
    p.add_argument("--replicas", type=int, default=1, help="no-op replicas behind the gateway (default 1)")
    p.add_argument("--hop", choices=["unix", "tcp", "both"], default="unix",
                   help="the runtime upstream: the gateway reaches it on a unix socket as the daemon reaches "
                        "a process replica (default), on its port, or both side by side (labels N and N-tcp)")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (default 1; a many-core host comparing --workers 1,8 needs more)")
    p.add_argument("--load-procs", type=int, default=1,
                   help="asyncio load generator processes when wrk is not used (default 1)")
    p.add_argument("--base", help="another checkout, whose gateway (one worker) runs beside this one's")
    p.add_argument("--rounds", type=int, default=1, help="runs per level, the gateways' order alternated")
    p.add_argument("--serve-raw-upstream", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-gateway", nargs="+", type=int, help=argparse.SUPPRESS)
    p.add_argument("--gateway-workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--upstream-sockets", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve_raw_upstream:
        return serve_raw_upstream(args.serve_raw_upstream)
    if args.serve_gateway:
        return serve_gateway(args.serve_gateway[0], args.serve_gateway[1:], args.gateway_workers,
                             args.upstream_sockets)
    if args.load:
        return asyncio_load(args.load, int(args.concurrency), args.duration)

    global WRK_THREADS, LOAD_PROCS
    WRK_THREADS, LOAD_PROCS = args.wrk_threads, args.load_procs
    upstream = args.upstream
    if upstream == "auto":
        upstream = "runtime" if (REPO / "predictor_runtime" / "server.py").exists() else "raw"
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    levels = [int(c) for c in args.concurrency.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="cortexd-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        hop = args.hop if upstream == "runtime" else "tcp"  # the raw upstream listens on TCP only
        sockets: list[str] | None = [] if hop != "tcp" else None
        ups = start_upstreams(upstream, args.replicas, tmp, procs, sockets)
        direct = f"http://127.0.0.1:{ups[0]}/"
        gateways = {str(w): start_gateways(w, ups, args.route, procs, sockets=sockets) for w in worker_counts}
        if hop == "both":
            gateways.update({f"{w}-tcp": start_gateways(w, ups, args.route, procs) for w in worker_counts})
        if args.base:
            gateways["base"] = start_gateways(1, ups, args.route, procs, Path(args.base) / "bench" / "gateway.py")
        script = None
        if use_wrk:
            script = tmp / "post.lua"  # static request: wrk builds it once, no per-request Lua
            script.write_text(f'wrk.method = "POST"\nwrk.body = \'{PAYLOAD.decode()}\'\n'
                              'wrk.headers["Content-Type"] = "application/json"\n')
        print(f"route: {args.route}; upstream: {upstream} x{args.replicas} ({hop}); "
              f"load: {'wrk' if use_wrk else 'asyncio'}; "
              f"{args.duration:g} s per run; {os.cpu_count()} CPUs; direct = replica 1 alone")
        replicas = with_children([proc.pid for proc in procs[:args.replicas]])
        compare(levels, direct, gateways, replicas, args.rounds, args.duration, script)
    finally:
        stop_all(reversed(procs))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
