"""Process backend: how long a replica takes from `start()` to accepting connections (ready).

    python bench/replica_start.py [--runs 20] [--user default|daemon]

Starts the process backend on the echo project (tests/builders.py, no requirements: the
daemon's own Python), then, `--runs` times: start one replica, time the start() call (the spawn:
files, cgroups, fork, what runs between fork and exec) and the time until its port accepts a
connection (the runtime listens once __init__ finished: ready), stop it. Prints the median and
the 90th percentile of both. `--user daemon` runs replicas as the daemon's own user (a root
daemon's `--replica-user root`); `default` is what a user gets. Run by hand, never by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cortexd.backends.process import ProcessBackend
from tests.builders import echo_project, make_spec
from tests.real_runtime import accepts


async def one_start(backend: ProcessBackend, spec, replica_id: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    info = await backend.start(spec, replica_id)
    spawned = time.perf_counter() - t0
    deadline = time.monotonic() + 60
    while not accepts(info.port):
        if time.monotonic() > deadline:
            raise SystemExit(f"replica {replica_id} not ready in 60 s: {await backend.logs(replica_id, 20)}")
        await asyncio.sleep(0.005)
    ready = time.perf_counter() - t0
    await backend.stop(replica_id)
    return spawned, ready


async def main(runs: int, user: str | None) -> None:
    root = Path(tempfile.mkdtemp(prefix="cxd-bench-"))
    root.chmod(0o755)
    try:
        project = echo_project(root / "project", requirements=None)
        spec = make_spec(project)
        backend = ProcessBackend(root / "run", root / "logs", replica_user=user, homes_dir=root / "homes")
        await one_start(backend, spec, "echo-warm")  # imports cached, uid assigned, probes done
        times = [await one_start(backend, spec, f"echo-r{i}") for i in range(runs)]
        await backend.close()
        for label, values in (("start() call", [t[0] for t in times]), ("start to ready", [t[1] for t in times])):
            ms = sorted(v * 1000 for v in values)
            p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
            print(f"{label:15} median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms   (n={len(ms)})")
        print(f"runs as: {backend.isolation(spec.name)}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--user", choices=["default", "daemon"], default="default")
    args = parser.parse_args()
    asyncio.run(main(args.runs, None if args.user == "default" else str(os.getuid())))
