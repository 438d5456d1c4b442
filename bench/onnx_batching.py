"""Server-side batching on an ONNX model: the same load against replicas with and without it.

Run by hand (never a test):

    python bench/onnx_batching.py                          # iris logreg, concurrency 32, 5 s per run
    python bench/onnx_batching.py --kind mlp --duration 10  # a heavier model (two 256-unit layers)

The model is made by examples/onnx-iris/make_model.py into a temp dir (scikit-learn
+ skl2onnx). Each configuration is its own `python -m predictor_runtime` process
serving examples/onnx-iris/predictor.py (Cortex's example: a plain list in,
prediction[0][0] out) on a loopback port; the load goes straight to it (no
gateway), one configuration after the other in the same run. Load: wrk (one
thread, a static POST of sample.json; `apt-get install wrk`). Reports req/s,
p50/p99 latency, errors, and the batch sizes the replica saw (from GET on the
endpoint).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway import free_port, run_wrk  # the shared load generator

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "onnx-iris"


def start_replica(workdir: Path, model: Path, port: int, threads: int, batching: dict | None) -> subprocess.Popen:
    spec = {
        "name": "bench", "endpoint": "/bench", "project_dir": str(EXAMPLE),
        "predictor": {"type": "onnx", "path": str(EXAMPLE / "predictor.py"), "python_path": str(EXAMPLE),
                      "model_path": str(model), "signature_key": None, "models": None,
                      "server_side_batching": batching, "processes_per_replica": 1,
                      "threads_per_process": threads, "config": {}},
        "monitoring": None,
    }
    path = workdir / f"spec-{port}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "predictor_runtime", "--spec", str(path), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the replica exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:g} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", default="logreg", choices=["logreg", "tree", "mlp", "mlp-large"])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-interval", type=float, default=0.002, help="seconds (default 0.002)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cortexd-bench-onnx-"))
    model = tmp / "model"
    subprocess.run([sys.executable, str(EXAMPLE / "make_model.py"), "--out", str(model), "--kind", args.kind],
                   check=True, capture_output=True)
    if not shutil.which("wrk"):
        raise SystemExit("this benchmark needs wrk: apt-get install -y wrk")
    body = (EXAMPLE / "sample.json").read_text().strip()
    script = tmp / "post.lua"
    script.write_text(f"wrk.method = \"POST\"\nwrk.body = '{body}'\n"
                      'wrk.headers["Content-Type"] = "application/json"\n')

    b = args.max_batch_size
    configs = [
        ("no batching, threads_per_process=1", 1, None),
        (f"no batching, threads_per_process={b}", b, None),
        (f"server_side_batching max_batch_size={b} batch_interval={args.batch_interval * 1e3:g}ms", b,
         {"max_batch_size": b, "batch_interval": args.batch_interval}),
    ]
    print(f"model: iris {args.kind} (ONNX); concurrency {args.concurrency}; {args.duration:g} s per run; "
          f"load: wrk -t1; {os.cpu_count()} CPUs")
    print(f"{'configuration':<62} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  batches")
    try:
        for label, threads, batching in configs:
            port = free_port()
            proc = start_replica(tmp, model, port, threads, batching)
            try:
                url = f"http://127.0.0.1:{port}/bench"
                wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
                run_wrk(url, args.concurrency, min(1.0, args.duration), script)  # warm-up
                r = run_wrk(url, args.concurrency, args.duration, script)
                with urllib.request.urlopen(url) as resp:
                    info = json.load(resp)
                sizes = info.get("server_side_batching", {})
                batches = (f"{sizes['requests'] / max(1, sizes['batches']):.1f} avg, largest "
                           f"{sizes['largest_batch']}") if sizes else "-"
                print(f"{label:<62} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['errors']:>6}  {batches}")
            finally:
                proc.terminate()
                proc.wait(15)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
