"""The same work on cortexd and on the servers users pick instead, side by side in one run.

Run by hand (never a test):

    python bench/peers.py                                   # every server and workload, 10 s runs at c32
    python bench/peers.py --servers cortexd,litserve --workloads noop --duration 5
    python bench/peers.py --concurrency 8 --max-batch-size 16 --batch-wait-ms 10 --out peers.md

Each server is installed by this script into a virtualenv of its own under the cache folder
(`--cache`, default ~/.cache/cortexd-bench/peers; uv when on PATH, else venv + pip, from PyPI):
cortexd from this checkout (`pip install .`, reinstalled each run) and BentoML, LitServe and Ray
Serve at their newest release, each with onnxruntime and numpy. The models (bench/peer_apps.py)
are made here with onnx.helper. For each workload, each server in turn: its app is written, it
is started as its own process group on 127.0.0.1, waited for (a POST answered 200), warmed up,
loaded by wrk (one thread, a static POST read from a file), measured, and stopped (SIGTERM to
its group, then SIGKILL to the group and to every process of its tree that is left). Every
wait has a timeout. Figures: req/s, p50/p99 latency (wrk), and the CPU time of the server's
whole process tree (/proc) per answered request; printed as a markdown table with ratios to
cortexd's figures in the same run, the versions installed, and the machine.

cortexd runs in the foreground (`cortexd up --backend process`, its own CORTEXD_HOME in a temp
folder) with its replicas as root (CORTEXD_REPLICA_USER=root: the virtualenv is under /root,
which a replica's own uid cannot read; the other servers run as root too).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_apps
from gateway import free_port
from peer_report import Result, machine, parse_wrk, stat_fields, table, tree_of

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cortexd-bench" / "peers"
COMMON_REQUIREMENTS = ["onnxruntime", "numpy"]


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: list[str]  # what goes into its virtualenv (pip requirement specifiers; cortexd: this checkout)
    package: str  # whose version the table shows
    write_app: Callable[[Path, peer_apps.Workload, Path, peer_apps.Batching], None]
    command: Callable[[Path, int, Path], list[str]]  # (virtualenv, port, app folder) -> argv
    path: str  # the endpoint's path
    env: dict[str, str]


def _cortexd_command(venv: Path, port: int, app: Path) -> list[str]:
    return [str(venv / "bin" / "python"), "-m", "cortexd", "up", "--backend", "process", "--port", str(port),
            "--metrics-port", "0", str(app)]


PEERS = {
    "cortexd": Peer("cortexd", [], "cortexd", peer_apps.cortexd_app, _cortexd_command, "/bench",
                    {"CORTEXD_REPLICA_USER": "root"}),
    "bentoml": Peer("bentoml", ["bentoml"], "bentoml", peer_apps.bentoml_app,
                    lambda venv, port, app: [str(venv / "bin" / "bentoml"), "serve", "service:Bench",
                                             "--host", "127.0.0.1", "--port", str(port)],
                    "/predict", {"BENTOML_DO_NOT_TRACK": "True"}),
    "litserve": Peer("litserve", ["litserve"], "litserve", peer_apps.litserve_app,
                     lambda venv, port, app: [str(venv / "bin" / "python"), "server.py", str(port)],
                     "/predict", {}),
    "ray": Peer("ray", ["ray[serve]"], "ray", peer_apps.ray_app,
                lambda venv, port, app: [str(venv / "bin" / "python"), "serve_app.py", str(port)],
                "/predict", {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                             # its agents start slowly on a busy machine: wait longer than its default
                             "RAY_agent_register_timeout_ms": "180000"}),
}


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- virtualenvs ---------------------------------------------------------------------------------


def ensure_venv(folder: Path, requirements: list[str], timeout: float, local: tuple[str, Path] | None = None) -> Path:
    """folder as a virtualenv holding requirements (installed once) and local, (name, source
    folder), installed again every time (this checkout: the bench measures the code as it is)."""
    stamp = folder / "cortexd-bench-requirements.txt"
    wanted = "\n".join(requirements)
    uv = shutil.which("uv")
    if not (folder / "bin" / "python").exists():
        create = [uv, "venv", "-q", "-p", sys.executable] if uv else [sys.executable, "-m", "venv"]
        create.append(str(folder))
        subprocess.run(create, check=True, timeout=timeout)
    if stamp.exists() and stamp.read_text() == wanted and local is None:
        return folder
    first = not stamp.exists()  # compile at the first install, as pip does: no server compiles at its start
    wanted_now = requirements + ([str(local[1])] if local else [])
    if uv:  # uv keeps a local folder's build unless told to reinstall it
        env = {**os.environ, "VIRTUAL_ENV": str(folder)}
        cmd = [uv, "pip", "install", "-q", *wanted_now, *(["--compile-bytecode"] if first else []),
               *([f"--reinstall-package={local[0]}"] if local else [])]
    else:  # pip installs a local folder again each time
        env = dict(os.environ)
        cmd = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", *wanted_now]
    say(f"installing into {folder}: {' '.join(wanted_now)}")
    subprocess.run(cmd, check=True, timeout=timeout, env=env)
    stamp.write_text(wanted)
    return folder


def installed_version(venv: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    version = out.stdout.strip() or "?"
    if package == "cortexd":
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        version += f" ({rev}{'+changes' if dirty else ''})" if rev else ""
    return version


# -- processes -------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, CPU ticks, start time field) of every process now."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid, ticks = stat_fields(stat)
            found[int(entry.name)] = (ppid, ticks, stat.rsplit(")", 1)[1].split()[19])
    return found


def tree_cpu(root: int) -> tuple[float, dict[int, str]]:
    """CPU seconds of root's process tree so far, and its members (pid -> start time)."""
    procs = process_table()
    members = tree_of(root, {pid: p[0] for pid, p in procs.items()}) & procs.keys()
    ticks = sum(procs[pid][1] for pid in members)
    return ticks / os.sysconf("SC_CLK_TCK"), {pid: procs[pid][2] for pid in members}


def stop(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the server's group, then SIGKILL to the group and to what is left of its tree."""
    _, members = tree_cpu(proc.pid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            say(f"  pid {proc.pid} still running {grace:g} s after SIGTERM: SIGKILL")
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        now = process_table()
        left = [pid for pid, start in members.items() if pid in now and now[pid][2] == start]
        if not left:
            return
        for pid in left:  # a process of the tree in a session of its own (cortexd's replicas, ray's workers)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    say(f"  processes of pid {proc.pid}'s tree still alive: {left}")


def wait_ready(url: str, body: bytes, proc: subprocess.Popen, log: Path, timeout: float) -> bytes:
    """The first 200 answer to body (what the server says, for a look); RuntimeError if none in time."""
    deadline = time.monotonic() + timeout
    headers = {"Content-Type": "application/json"}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before serving: {last_line(log)}\n"
                               f"its log ends:\n{tail(log)}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as r:
                if r.status == 200:
                    return r.read()
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s: {last_line(log)}\n"
                       f"its log ends:\n{tail(log)}")


def last_line(log: Path) -> str:
    lines = [line.strip() for line in tail(log).splitlines() if line.strip()]
    return lines[-1][:160] if lines else "(nothing logged)"


def tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def run_wrk(url: str, concurrency: int, duration: float, script: Path) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk exited with {out.returncode}: {out.stderr[-500:]}")
    return parse_wrk(out.stdout)


# -- one measurement ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    tmp: Path
    models: Path
    venvs: dict[str, Path]
    batching: peer_apps.Batching
    duration: float
    warmup: float
    concurrency: int
    start_timeout: float
    start_attempts: int


def write_load(folder: Path, body: bytes) -> Path:
    """wrk's script: a static POST of body (wrk builds the request once, no Lua per request)."""
    (folder / "body.json").write_bytes(body)
    script = folder / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = assert(io.open("{folder / "body.json"}", "rb"))\n'
                      'wrk.body = f:read("*a")\nf:close()\n')
    return script


def start(run: Run, peer: Peer, app: Path, body: bytes, home: Path) -> tuple[subprocess.Popen, str]:
    """peer serving app on a free loopback port, answering body with 200: its process and URL.

    A server that exits before serving is started again, up to run.start_attempts times in all
    (Ray's raylet gives its agents a fixed 15 s to start, which a busy machine can exceed).
    """
    env = {**os.environ, **peer.env, "CORTEXD_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    for attempt in range(1, run.start_attempts + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}{peer.path}"
        log = app.parent / f"server-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(peer.command(run.venvs[peer.name], port, app), cwd=app, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            answer = wait_ready(url, body, proc, log, run.start_timeout)
            say(f"  {peer.name} answers {answer[:100]!r}")
            return proc, url
        except RuntimeError as e:
            stop(proc, grace=30)
            if attempt == run.start_attempts or "exited with" not in str(e):
                say(f"  {peer.name}: {e}")
                reason = last_line(log).split(". ")[0]  # the table's cell: the first sentence
                raise RuntimeError(f"did not serve ({attempt} start{'s' if attempt > 1 else ''}): {reason}") from e
            say(f"  {peer.name}: {str(e).splitlines()[0]}; starting it again")
    raise AssertionError("unreachable")


def measure(run: Run, peer: Peer, workload: peer_apps.Workload) -> Result:
    """Start peer's app for workload, load it, stop it: its figures, or why there are none."""
    folder = run.tmp / f"{peer.name}-{workload.name}"  # the app in app/, what the bench writes beside it:
    app = folder / "app"  # cortexd watches a project's files and rolls its API when one changes
    peer.write_app(app, workload, run.models, run.batching)
    body = peer_apps.request_body(workload.name, peer.name)
    script = write_load(folder, body)
    home = Path(tempfile.mkdtemp(prefix="cxp-"))  # cortexd's CORTEXD_HOME: short, a unix socket lives there
    proc = None
    try:
        started = time.monotonic()
        proc, url = start(run, peer, app, body, home)
        say(f"  {peer.name} {workload.name}: ready in {time.monotonic() - started:.1f} s")
        run_wrk(url, run.concurrency, run.warmup, script)
        cpu0, _ = tree_cpu(proc.pid)
        figures = run_wrk(url, run.concurrency, run.duration, script)
        cpu1, _ = tree_cpu(proc.pid)
        return Result(peer.name, workload.name, figures["rps"], figures["p50"], figures["p99"],
                      (cpu1 - cpu0) / max(1, figures["count"]) * 1e6, int(figures["errors"]))
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        say(f"  {peer.name} {workload.name} failed: {str(e).splitlines()[0]}")
        return Result(peer.name, workload.name, failed=str(e).splitlines()[0][:240])
    finally:
        if proc is not None:
            stop(proc, grace=30)
        shutil.rmtree(home, ignore_errors=True)


# -- main ----------------------------------------------------------------------------------------------


def describe_machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpuinfo = f.read()
    with open("/proc/loadavg") as f:
        loadavg = f.read()
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return machine(cpuinfo, loadavg, os.cpu_count() or 0, mem_kb)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="noop,tabular,image", help="comma-separated (default all)")
    p.add_argument("--servers", default=",".join(PEERS), help=f"comma-separated (default {','.join(PEERS)})")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of measured load per run (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measured run (default 3)")
    p.add_argument("--concurrency", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--max-batch-size", type=int, default=8, help="batching's largest batch (default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="batching's longest wait (default 5)")
    p.add_argument("--start-timeout", type=float, default=240.0, help="seconds a server may take to serve")
    p.add_argument("--start-attempts", type=int, default=3, help="starts of a server that exits before serving")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"the virtualenvs' folder (default {CACHE})")
    p.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = p.parse_args()
    for option, known in (("workloads", peer_apps.WORKLOADS), ("servers", PEERS)):
        unknown = sorted(set(getattr(args, option).split(",")) - set(known))
        if unknown:
            p.error(f"--{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    if not shutil.which("wrk"):
        p.error("this benchmark needs wrk (apt-get install -y wrk)")
    return args


def main() -> None:
    args = parse_args()
    names = [n for n in PEERS if n in args.servers.split(",")]  # cortexd first: the baseline
    venvs = {n: ensure_venv(args.cache / n, PEERS[n].requirements + COMMON_REQUIREMENTS,
                            timeout=1800, local=("cortexd", REPO) if n == "cortexd" else None) for n in names}
    versions = {n: installed_version(venvs[n], PEERS[n].package) for n in names}
    tmp = Path(tempfile.mkdtemp(prefix="cortexd-peers-"))
    try:
        peer_apps.make_models(tmp / "models")
        run = Run(tmp, tmp / "models", venvs, peer_apps.Batching(args.max_batch_size, args.batch_wait_ms / 1e3),
                  args.duration, args.warmup, args.concurrency, args.start_timeout, args.start_attempts)
        before = describe_machine()
        results = [measure(run, PEERS[n], peer_apps.WORKLOADS[w])
                   for w in args.workloads.split(",") for n in names]
        after = describe_machine().rsplit("load average ", 1)[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = "\n".join([
        f"Machine: {before} before the run, {after} after it.",
        f"Load: wrk -t1 -c{args.concurrency}, {args.duration:g} s per run after {args.warmup:g} s of warm-up, "
        f"loopback; batching (image): at most {args.max_batch_size} requests, {args.batch_wait_ms:g} ms wait.",
        "", table(results, versions), ""])
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
