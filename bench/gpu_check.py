"""GPU check: what an API with `compute.gpu: 1` gets on the process backend, through the real CLI.

Run by hand (never a test), on a host with NVIDIA GPUs:

    python bench/gpu_check.py                        # every check, 10 s load per run
    python bench/gpu_check.py --json gpu.json        # also a JSON summary
    python bench/gpu_check.py --force-cpu-dry-run    # no GPU needed: the plumbing, against compute.gpu: 0

On a host without one (no NVML, no device) it prints one line saying why and exits 0.

One daemon (`python -m cortexd up -d --backend process`, CORTEXD_HOME in a temp
dir, the default replica user) serves, one
after the other (a one-GPU host has room for one `gpu: 1` replica at a time):

1. `gpu-probe`, a python predictor that answers the replica's os.environ
   (CUDA_VISIBLE_DEVICES against the replica's gpu_ids in `get`) and asks
   onnxruntime for its providers and a session's providers on a small model;
   meanwhile `cortexd get -o json` must list the NVML inventory;
2. `gpu-probe-tf`, the same predictor asked for tf.config.list_physical_devices('GPU');
3. `batch-gpu`, then `batch-cpu`: examples/onnx-iris (Cortex's ONNX predictor) on the
   model bench/onnx_batching.py uses (examples/onnx-iris/make_model.py, default
   `mlp-large`: three 1024-unit layers) with server_side_batching, `gpu: 1` then
   `gpu: 0`, under the same load (wrk when installed, else an asyncio generator;
   loopback, concurrency 32), GPU utilization sampled from `get -o json` meanwhile;
   the runtime's log line on the provider it chose is read from `cortexd logs`;
4. issue 20.4 on a host of 8 CPUs or more: the gateway on 1 process against 8 (the daemon's
   gateway workers) in front of 8 no-op replicas, `bench/gateway.py --workers 1,8` (about 80 s).

Every phase runs under an alarm (and every subprocess under a timeout); the
daemon is stopped and the temp dirs removed whatever happens. Exit status: 0
when nothing failed (a missing onnxruntime-gpu or tensorflow is reported as
unavailable, not failed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import free_port, run_wrk  # the shared load generator

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "onnx-iris"
SAMPLE = (EXAMPLE / "sample.json").read_text().strip()

# The probe imports onnxruntime and tensorflow through importlib on purpose: the process
# backend adds Cortex's pre-installed packages that a project's code imports (an ast scan),
# and this check is about what the runtime already has, not about installing tensorflow.
PROBE_PREDICTOR = '''
import importlib
import os


def environment():
    keys = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
    return {k: os.environ.get(k) for k in keys}


def onnxruntime_providers(model):
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as e:
        return {"error": f"onnxruntime is not importable in the replica: {e}"}
    import numpy as np
    out = {"version": ort.__version__, "device": ort.get_device(),
           "available": ort.get_available_providers()}
    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in out["available"]]
    try:
        session = ort.InferenceSession(model, providers=wanted)
        session.run(None, {session.get_inputs()[0].name: np.zeros((4, 4), dtype=np.float32)})
        out["session_providers"] = session.get_providers()
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def tensorflow_gpus():
    try:
        tf = importlib.import_module("tensorflow")
    except ImportError as e:
        return {"installed": False, "error": f"tensorflow is not importable in the replica: {e}"}
    out = {"installed": True, "version": tf.__version__, "built_with_cuda": tf.test.is_built_with_cuda()}
    try:
        out["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


class PythonPredictor:
    def __init__(self, config):
        self.model = config["model"]

    def predict(self, payload):
        check = payload.get("check")
        if check == "onnxruntime":
            return onnxruntime_providers(self.model)
        if check == "tensorflow":
            return tensorflow_gpus()
        return environment()
'''


class PhaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise PhaseTimeout()


# -- the outcome -----------------------------------------------------------------------------


class Report:
    """Checks (name -> status, detail, values) and phases (name -> seconds, outcome)."""

    def __init__(self) -> None:
        self.checks: dict[str, dict[str, Any]] = {}
        self.phases: list[dict[str, Any]] = []
        self.batching: dict[str, dict[str, Any]] = {}

    def check(self, name: str, status: str, detail: str, **values: Any) -> None:
        self.checks[name] = {"status": status, "detail": detail, **values}
        print(f"  [{status}] {name}: {detail}", flush=True)

    @contextlib.contextmanager
    def phase(self, name: str, seconds: int) -> Iterator[None]:
        """Runs the block under an alarm; a failure is recorded, the next phase still runs."""
        started = time.monotonic()
        outcome = "ok"
        print(f"-- {name} (at most {seconds} s)", flush=True)
        signal.alarm(seconds)
        try:
            yield
        except PhaseTimeout:
            outcome = f"timed out after {seconds} s"
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        took = time.monotonic() - started
        self.phases.append({"phase": name, "seconds": round(took, 1), "outcome": outcome})
        if outcome != "ok":
            print(f"  phase {name!r} stopped: {outcome}", flush=True)

    def failed(self) -> bool:
        return (any(c["status"] == "fail" for c in self.checks.values())
                or any(p["outcome"] != "ok" for p in self.phases))


# -- the daemon, through its CLI ---------------------------------------------------------------


class Daemon:
    def __init__(self, home: Path):
        self.home = home
        # the defaults a user gets: a root daemon whose Python or temp folders other uids cannot
        # reach serves as root and says so (issue 15)
        self.env = {**os.environ, "CORTEXD_HOME": str(home), "PYTHONPATH": str(REPO)}
        self.started = False

    def cli(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "cortexd", *args], env=self.env, cwd=str(REPO),
                           capture_output=True, text=True, timeout=timeout, check=False)
        if check and p.returncode != 0:
            raise RuntimeError(f"cortexd {' '.join(args)} exited {p.returncode}: "
                               f"{(p.stderr or p.stdout).strip()[-600:]}")
        return p

    def up(self, project: Path, wait: int) -> None:
        self.started = True
        self.cli("up", "-d", "--backend", "process", "--metrics-port", "0", "--wait", str(wait), str(project),
                 timeout=wait + 60)

    def status(self) -> dict:
        return json.loads(self.cli("get", "-o", "json").stdout)

    def api(self, name: str) -> dict:
        return next((a for a in self.status()["apis"] if a["name"] == name), {})

    def deploy(self, project: Path, api: str, wait: float) -> dict:
        self.cli("deploy", str(project), timeout=60)
        return self.wait_live(api, wait)

    def wait_live(self, api: str, wait: float) -> dict:
        deadline = time.monotonic() + wait
        last: dict = {}
        while time.monotonic() < deadline:
            last = self.api(api)
            if last.get("status") == "live":
                return last
            if last.get("status") == "error":
                break
            time.sleep(0.5)
        raise RuntimeError(f"{api} is not live: status {last.get('status')!r}, reason {last.get('reason')!r}, "
                           f"pending {last.get('replicas', {}).get('pending_reason')!r}")

    def delete(self, api: str, wait: float = 60) -> None:
        """Removes an API and waits until its replicas are gone (their GPUs free again)."""
        self.cli("delete", api, timeout=60)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.api(api):
            time.sleep(0.3)

    def logs(self, api: str) -> str:
        return self.cli("logs", api, "--tail", "200", check=False, timeout=30).stdout

    def down(self) -> str:
        if not self.started:
            return "not started"
        p = self.cli("down", check=False, timeout=120)
        return (p.stdout or p.stderr).strip() or f"exit {p.returncode}"


def post(url: str, value: Any, timeout: float) -> Any:
    req = urllib.request.Request(url, data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def write_project(folder: Path, yaml_text: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cortex.yaml").write_text(yaml_text)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def probe_project(folder: Path, name: str, gpu: int, model: Path) -> Path:
    return write_project(folder, f"""- name: {name}
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      model: {json.dumps(str(model))}
  compute:
    gpu: {gpu}
  networking:
    local_port: {free_port()}
""", {"predictor.py": PROBE_PREDICTOR})


def batching_project(folder: Path, name: str, gpu: int, model_dir: Path, batch: int, interval: float) -> Path:
    return write_project(folder, f"""- name: {name}
  kind: RealtimeAPI
  predictor:
    type: onnx
    path: predictor.py
    model_path: {json.dumps(str(model_dir))}
    server_side_batching:
      max_batch_size: {batch}
      batch_interval: {interval * 1e3:g}ms
    threads_per_process: {batch}
  compute:
    gpu: {gpu}
  autoscaling:
    min_replicas: 1
    max_replicas: 1
  networking:
    local_port: {free_port()}
""", {"predictor.py": (EXAMPLE / "predictor.py").read_text()})


# -- load ---------------------------------------------------------------------------------------


def asyncio_load(url: str, body: str, concurrency: int, duration: float) -> None:
    """Fallback generator without wrk (its own process): keep-alive POSTs; JSON to stdout."""
    try:
        import uvloop
        run: Callable = uvloop.run
    except ImportError:
        run = asyncio.run
    host, port, path = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    data = body.encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    async def worker(latencies: list[float], errors: list[int], stop_at: float) -> None:
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

    async def main() -> None:
        latencies: list[float] = []
        errors: list[int] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(latencies, errors, t0 + duration) for _ in range(concurrency)))
        q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        print(json.dumps({"rps": len(latencies) / (time.perf_counter() - t0), "count": len(latencies),
                          "p50": q[49] * 1e3, "p99": q[98] * 1e3, "errors": len(errors)}))

    run(main())


def load(url: str, concurrency: int, duration: float, wrk_script: Path | None) -> dict:
    if wrk_script is not None:
        return run_wrk(url, concurrency, duration, wrk_script)  # bounded by the phase's alarm
    out = subprocess.run([sys.executable, __file__, "--load", url, "--concurrency", str(concurrency),
                          "--duration", str(duration)], capture_output=True, text=True, check=True,
                         timeout=duration + 60)
    return json.loads(out.stdout)


class GPUSampler(threading.Thread):
    """Samples the GPU section of `cortexd get -o json` about once a second while a load runs."""

    def __init__(self, daemon: Daemon):
        super().__init__(daemon=True)
        self.cortexd = daemon
        self.stop = threading.Event()
        self.utilization: list[int] = []
        self.memory_used: list[int] = []

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                devices = self.cortexd.status().get("gpus", {}).get("devices", [])
            except Exception:
                continue
            self.utilization += [d["utilization"] for d in devices if d.get("utilization") is not None]
            self.memory_used += [d["memory_used"] for d in devices]


# -- the checks -----------------------------------------------------------------------------------


def no_gpu_reason() -> str | None:
    """Why this host has no NVIDIA GPU to check (None when NVML lists at least one)."""
    from cortexd.nvml import read_inventory

    inventory = read_inventory()
    if inventory.devices:
        return None
    reasons = [] if shutil.which("nvidia-smi") else ["nvidia-smi is not on PATH"]
    return "; ".join(reasons + [inventory.reason or "NVML lists no device"])


def nvidia_smi_names() -> list[str] | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return None
    return [line.strip() for line in p.stdout.splitlines() if line.strip()] if p.returncode == 0 else None


def check_environment(report: Report, daemon: Daemon, api: dict, gpu: int) -> None:
    env = post(api["url"], {"check": "env"}, timeout=30)
    ids = [i for r in api["replica_list"] for i in r.get("gpu_ids", [])]
    expected = ",".join(str(i) for i in ids)
    seen = env.get("CUDA_VISIBLE_DEVICES")
    good = seen == expected and (bool(seen) if gpu else seen == "") and env.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
    report.check("CUDA_VISIBLE_DEVICES", "ok" if good else "fail",
                 f"the replica sees {seen!r} (CUDA_DEVICE_ORDER={env.get('CUDA_DEVICE_ORDER')!r}); "
                 f"`get` gives the replica gpu_ids {ids}", replica_env=env, gpu_ids=ids)


def check_inventory(report: Report, daemon: Daemon, gpu: int) -> None:
    gpus = daemon.status().get("gpus", {})
    devices = gpus.get("devices", [])
    smi = nvidia_smi_names()
    if not gpu:
        report.check("NVML inventory in get", "skipped",
                     f"dry run: `get` says {len(devices)} device(s), reason {gpus.get('reason')!r}", gpus=gpus)
        return
    complete = bool(devices) and all(d.get("name") and d.get("memory_total", 0) > 0 for d in devices)
    agrees = smi is None or sorted(smi) == sorted(d["name"] for d in devices)
    described = ", ".join(
        f"{d['index']}: {d['name']} {d['memory_used'] / 2**30:.1f}/{d['memory_total'] / 2**30:.1f} GiB "
        f"util {d['utilization'] if d['utilization'] is not None else 'n/a'}%" for d in devices)
    no_util = [d["index"] for d in devices if d.get("utilization") is None]
    report.check("NVML inventory in get", "ok" if complete and agrees else "fail",
                 f"driver {gpus.get('driver_version')}; {described or 'no devices'}"
                 + (f"; nvidia-smi lists {smi}" if not agrees else "")
                 + (f"; no utilization for {no_util} (MIG or unsupported board)" if no_util else ""),
                 gpus=gpus, nvidia_smi=smi)


def check_onnxruntime(report: Report, api: dict, gpu: int) -> None:
    ort = post(api["url"], {"check": "onnxruntime"}, timeout=120)
    available = ort.get("available", [])
    used = ort.get("session_providers", [])
    if "version" not in ort:
        status, detail = "unavailable", ort.get("error", "no answer")
    elif not gpu:
        status = "skipped"
        detail = (f"dry run (no GPU given): onnxruntime {ort['version']} has {available}; a session runs on {used}"
                  + (f" ({ort['error']})" if ort.get("error") else ""))
    elif "CUDAExecutionProvider" not in available:
        status = "unavailable"
        detail = (f"onnxruntime {ort['version']} in the replica has no CUDA provider (available: {available}); "
                  "install onnxruntime-gpu (the onnx-gpu extra) for the GPU")
    elif "CUDAExecutionProvider" not in used:
        status = "fail"
        detail = (f"onnxruntime {ort['version']} lists the CUDA provider but a session fell back to {used}"
                  f" ({ort.get('error') or 'CUDA or cuDNN libraries missing? see the replica log'})")
    else:
        status, detail = "ok", f"onnxruntime {ort['version']}: a session runs on {used}"
    report.check("onnxruntime CUDA provider (probe)", status, detail, replica=ort)


def check_tensorflow(report: Report, api: dict, gpu: int) -> None:
    tf = post(api["url"], {"check": "tensorflow"}, timeout=180)
    if not tf.get("installed"):
        report.check("TensorFlow sees the GPU", "unavailable", tf.get("error", "no answer"), replica=tf)
        return
    gpus = tf.get("gpus", [])
    if not gpu:
        status = "skipped" if not gpus else "fail"  # gpu: 0 must hide every GPU
    else:
        status = "ok" if gpus else ("unavailable" if not tf.get("built_with_cuda") else "fail")
    report.check("TensorFlow sees the GPU", status,
                 f"tensorflow {tf['version']} (built with CUDA: {tf['built_with_cuda']}) lists {gpus}"
                 + (f"; {tf['error']}" if tf.get("error") else ""), replica=tf)


def provider_log_line(daemon: Daemon, api: str) -> str:
    lines = [line for line in daemon.logs(api).splitlines() if "onnxruntime" in line]
    return lines[-1].strip() if lines else ""


def run_batching(report: Report, daemon: Daemon, api: dict, label: str, args: argparse.Namespace,
                 wrk_script: Path | None) -> None:
    url = api["url"]
    load(url, args.concurrency, min(2.0, args.duration), wrk_script)  # warm-up: sessions, CUDA kernels
    sampler = GPUSampler(daemon)
    sampler.start()
    try:
        result = load(url, args.concurrency, args.duration, wrk_script)
    finally:
        sampler.stop.set()
        sampler.join(10)
    with urllib.request.urlopen(url, timeout=10) as resp:
        sizes = json.load(resp).get("server_side_batching") or {}
    result["average_batch"] = round(sizes["requests"] / max(1, sizes["batches"]), 1) if sizes else None
    result["largest_batch"] = sizes.get("largest_batch")
    result["gpu_utilization_max"] = max(sampler.utilization, default=None)
    result["gpu_memory_used_max"] = max(sampler.memory_used, default=None)
    result["provider_log"] = provider_log_line(daemon, api["name"])
    report.batching[label] = result
    util = "" if result["gpu_utilization_max"] is None else f", GPU utilization up to {result['gpu_utilization_max']}%"
    print(f"  {label}: {result['rps']:.0f} req/s, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
          f"{result['errors']} errors, batches {result['average_batch']} avg / {result['largest_batch']} largest"
          f"{util}; log: {result['provider_log'] or '(no onnxruntime line)'}", flush=True)


def check_provider_log(report: Report) -> None:
    line = report.batching.get("gpu", {}).get("provider_log", "")
    if "CUDAExecutionProvider" in line and "running on the GPU" in line:
        report.check("onnxruntime CUDA provider (runtime log)", "ok", line)
    elif "no CUDAExecutionProvider" in line:
        report.check("onnxruntime CUDA provider (runtime log)", "unavailable", line)
    else:
        report.check("onnxruntime CUDA provider (runtime log)", "fail", line or "the replica logged no provider choice")


def check_utilization(report: Report) -> None:
    run = report.batching.get("gpu")
    if not run:
        return
    peak, memory = run["gpu_utilization_max"], run["gpu_memory_used_max"]
    if peak is None:
        status = "unavailable" if memory is not None else "fail"
        detail = ("NVML gives no utilization for these devices (MIG or unsupported board)" if memory is not None
                  else "`get` had no GPU samples during the load")
    else:
        status = "ok" if peak > 0 else "fail"
        detail = f"up to {peak}% under load, memory used up to {memory / 2**30:.2f} GiB"
    report.check("GPU utilization in get under load", status, detail)


def check_throughput(report: Report) -> None:
    gpu, cpu = report.batching.get("gpu"), report.batching.get("cpu")
    if not (gpu and cpu):
        return
    ratio = gpu["rps"] / cpu["rps"] if cpu["rps"] else float("inf")
    line = gpu.get("provider_log", "")
    if "running on the GPU" in line:
        status, note = ("fail" if gpu["errors"] or cpu["errors"] else "ok"), ""
    elif "no CUDAExecutionProvider" in line:
        status, note = "unavailable", "; the `gpu: 1` run ran on the CPU (no onnxruntime-gpu)"
    else:
        status, note = "fail", "; the `gpu: 1` run did not say it ran on CUDA"
    report.check("server_side_batching GPU vs CPU", status,
                 f"{gpu['rps']:.0f} vs {cpu['rps']:.0f} req/s ({ratio:.2f}x); p50 {gpu['p50']:.2f} vs "
                 f"{cpu['p50']:.2f} ms; errors {gpu['errors']}/{cpu['errors']}{note}", ratio=round(ratio, 2))


_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(\d+)\s+([\d.]+)\s+"
                  r"(\d+)/(\d+)", re.MULTILINE)


def check_gateway_workers(report: Report, use_wrk: bool, seconds: int, workers: int = 8) -> None:
    """Issue 20.4 on a many-core host: the gateway on 1 process against `workers` (the daemon's
    GatewayWorkers) in front of as many no-op replicas, by bench/gateway.py, in one run."""
    cpus = os.cpu_count() or 1
    if cpus < workers:
        report.check(f"gateway workers 1 vs {workers}", "skipped", f"{cpus} CPUs: the run needs {workers} or more")
        return
    load = ["--wrk-threads", "4"] if use_wrk else ["--loadgen", "asyncio", "--load-procs", "4"]
    argv = [sys.executable, str(REPO / "bench" / "gateway.py"), "--upstream", "raw", "--replicas", str(workers),
            "--workers", f"1,{workers}", "--concurrency", "256", "--duration", "5", "--rounds", "2", *load]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds, check=False)
    rows: dict[str, list[dict[str, float]]] = {}
    for m in _ROW.finditer(out.stdout):
        rows.setdefault(m.group(2), []).append({"rps": float(m.group(4)), "cpu_us": float(m.group(8)),
                                                "p99_added_ms": float(m.group(7)), "errors": int(m.group(11))})
    one, many = rows.get("1"), rows.get(str(workers))
    if out.returncode != 0 or not one or not many:
        report.check(f"gateway workers 1 vs {workers}", "fail",
                     f"bench/gateway.py exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")
        return
    best = {label: max(r["rps"] for r in runs) for label, runs in (("1", one), ("n", many))}
    ratio = best["n"] / best["1"] if best["1"] else float("inf")
    errors = sum(r["errors"] for r in one + many)
    report.check(f"gateway workers 1 vs {workers}", "fail" if errors else "ok",
                 f"{best['1']:.0f} vs {best['n']:.0f} req/s through the gateway ({ratio:.2f}x), CPU per request "
                 f"{[r['cpu_us'] for r in one]} vs {[r['cpu_us'] for r in many]} us, errors {errors}",
                 ratio=round(ratio, 2), runs={"1": one, str(workers): many})


# -- main -----------------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    print("\ncheck                                      status       detail")
    for name, c in report.checks.items():
        print(f"{name:<42} {c['status']:<12} {c['detail'][:200]}")
    if report.batching:
        print(f"\n{'batching run':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'avg batch':>9} "
              f"{'GPU util max':>12}")
        for label, r in report.batching.items():
            util = "-" if r["gpu_utilization_max"] is None else f"{r['gpu_utilization_max']}%"
            print(f"{label:<12} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6} "
                  f"{r['average_batch'] if r['average_batch'] is not None else '-':>9} {util:>12}")
    print("\nphases: " + "; ".join(f"{p['phase']} {p['seconds']:g} s ({p['outcome']})" for p in report.phases))


def write_json(path: str | None, summary: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(summary, indent=1) + "\n")
        print(f"summary: {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="write a JSON summary to FILE")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per batching run (default 10)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--kind", default="mlp-large", choices=["logreg", "tree", "mlp", "mlp-large"],
                   help="examples/onnx-iris/make_model.py model for the batching runs (default mlp-large)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-interval", type=float, default=0.002, help="seconds (default 0.002)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "asyncio"], default="auto")
    p.add_argument("--force-cpu-dry-run", action="store_true",
                   help="no GPU needed: run the env and probe checks against compute.gpu: 0 and only the CPU "
                        "batching run, to prove the plumbing")
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        asyncio_load(args.load, SAMPLE, args.concurrency, args.duration)
        return 0

    started = time.monotonic()
    summary: dict[str, Any] = {"host": os.uname().nodename, "cpus": os.cpu_count(), "dry_run": args.force_cpu_dry_run}
    if not args.force_cpu_dry_run:
        reason = no_gpu_reason()
        if reason:
            print(f"gpu_check: no NVIDIA GPU on this host ({reason}); nothing to check")
            write_json(args.json, {**summary, "gpu": False, "reason": reason})
            return 0
    gpu = 0 if args.force_cpu_dry_run else 1
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)

    signal.signal(signal.SIGALRM, _alarm)
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="cxd-gpuw-"))
    home = Path(tempfile.mkdtemp(prefix="cxd-gpuh-"))  # short: the control socket lives here
    os.chmod(work, 0o755)  # readable by a non-root replica user, when one is chosen
    daemon = Daemon(home)
    print(f"gpu_check: {'DRY RUN on the CPU (compute.gpu: 0)' if not gpu else 'compute.gpu: 1'}; "
          f"load {'wrk' if use_wrk else 'asyncio'}, concurrency {args.concurrency}, {args.duration:g} s per run; "
          f"replica user {daemon.env.get('CORTEXD_REPLICA_USER') or '(default)'}; {os.cpu_count()} CPUs", flush=True)
    try:
        models = work / "models"
        with report.phase("make models", 300):
            for kind, folder in (("logreg", models / "small"), (args.kind, models / "batching")):
                made = subprocess.run([sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(folder),
                                       "--kind", kind], capture_output=True, text=True, timeout=280, check=False)
                if made.returncode != 0:  # scikit-learn or skl2onnx missing, usually
                    raise RuntimeError(f"make_model.py --kind {kind} failed: {made.stderr.strip()[-400:]}")
        small = models / "small" / "iris.onnx"

        with report.phase("gpu-probe: environment, inventory, onnxruntime", 240):
            daemon.up(probe_project(work / "probe", "gpu-probe", gpu, small), wait=150)
            api = daemon.api("gpu-probe")
            check_environment(report, daemon, api, gpu)
            check_inventory(report, daemon, gpu)
            check_onnxruntime(report, api, gpu)
        with report.phase("gpu-probe-tf: tensorflow", 300):
            if daemon.api("gpu-probe"):
                daemon.delete("gpu-probe")
            api = daemon.deploy(probe_project(work / "probe-tf", "gpu-probe-tf", gpu, small), "gpu-probe-tf", 120)
            check_tensorflow(report, api, gpu)

        wrk_script = None
        if use_wrk:
            wrk_script = work / "post.lua"
            wrk_script.write_text(f"wrk.method = \"POST\"\nwrk.body = '{SAMPLE}'\n"
                                  'wrk.headers["Content-Type"] = "application/json"\n')
        runs = [("cpu", 0)] if not gpu else [("gpu", 1), ("cpu", 0)]
        for label, api_gpu in runs:
            name = f"batch-{label}"
            with report.phase(f"{name}: server_side_batching under load", int(2 * args.duration) + 240):
                for old in [a["name"] for a in daemon.status()["apis"]]:
                    daemon.delete(old)  # frees the GPU, and the CPUs for the load
                project = batching_project(work / name, name, api_gpu, models / "batching",
                                           args.max_batch_size, args.batch_interval)
                api = daemon.deploy(project, name, 180)
                run_batching(report, daemon, api, label, args, wrk_script)
        if gpu:
            check_provider_log(report)
            check_utilization(report)
            check_throughput(report)
        for old in [a["name"] for a in daemon.status()["apis"]]:
            daemon.delete(old)  # the CPUs for the gateway run
        with report.phase("gateway workers: 1 process against 8", 150):
            check_gateway_workers(report, use_wrk, 140)
    except KeyboardInterrupt:
        report.phases.append({"phase": "interrupted", "seconds": 0, "outcome": "KeyboardInterrupt"})
    finally:
        signal.alarm(0)
        try:
            summary["down"] = daemon.down()
        except Exception as e:
            summary["down"] = f"{type(e).__name__}: {e}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)

    print_table(report)
    summary.update({"gpu": bool(gpu), "checks": report.checks, "batching": report.batching, "phases": report.phases,
                    "seconds": round(time.monotonic() - started, 1), "failed": report.failed()})
    print(f"daemon: {summary['down']}; {summary['seconds']:g} s in all; "
          f"{'FAILED' if summary['failed'] else 'nothing failed'}")
    write_json(args.json, summary)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
