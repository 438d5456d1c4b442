"""Time from a load step to an added replica serving, and from a saved edit to the new version serving.

    python bench/live_updates.py [--runs 3] [--backend process]

Each run starts a private daemon (its own CORTEXD_HOME) on a generated project:
- scale: `target_replica_concurrency: 1`, `window: 10s`, `upscale_stabilization_period: 0s`;
  4 closed-loop clients start (a load step); measured until answers come from a second replica;
- rollout: 2 replicas, `max_surge: 1`, `max_unavailable: 0`, 3 clients; cortex.yaml is saved with a
  new `config.version` (temp file + rename, as editors do); measured until the first answer from the
  new version and until the rollout finished (every replica new and ready).
Failed (non-200) requests are counted during both. Run by hand; never by the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.builders import write_project
from tests.integration.test_live_updates import VERSIONED, api_yaml, edit, replica_ids, wait_until
from tests.load import KeepAliveClients
from tests.real_daemon import CLI, free_port


def readable(project: Path) -> Path:
    for p in [project, *project.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return project


def scale_run(backend: str) -> tuple[float, int]:
    home = Path(tempfile.mkdtemp(prefix="cxd-bench-"))
    home.chmod(0o755)  # a Docker replica's user must be able to read the project inside
    cli = CLI(home)
    port = free_port()
    extra = ("  autoscaling:\n    min_replicas: 1\n    max_replicas: 3\n    target_replica_concurrency: 1\n"
             "    window: 10s\n    upscale_stabilization_period: 0s\n")
    project = readable(write_project(home / "p", api_yaml("busy", port, "v1", extra),
                                     {"busy.py": VERSIONED.format(code="b")}))
    try:
        cli("up", "-d", "--backend", backend, "--wait", "600", str(project), check=True)
        t0 = time.monotonic()
        with KeepAliveClients(port, "/busy", 4, {"sleep": 0.2}, limit=600) as load:
            wait_until(lambda: len({b["pid"] for _, b in load.bodies()[-20:]}) >= 2, 120, "a second replica serving")
            took = time.monotonic() - t0
        return took, len(load.failures())
    finally:
        cli("down")


def rollout_run(backend: str) -> tuple[float, float, int, int]:
    home = Path(tempfile.mkdtemp(prefix="cxd-bench-"))
    home.chmod(0o755)  # a Docker replica's user must be able to read the project inside
    cli = CLI(home)
    port = free_port()
    extra = ("  autoscaling:\n    min_replicas: 2\n    max_replicas: 2\n"
             "  update_strategy:\n    max_surge: 1\n    max_unavailable: 0\n")
    text = api_yaml("rolled", port, "v1", extra)
    project = readable(write_project(home / "p", text, {"rolled.py": VERSIONED.format(code="r")}))
    try:
        cli("up", "-d", "--backend", backend, "--wait", "600", str(project), check=True)
        before = replica_ids(cli.status(), "rolled")
        with KeepAliveClients(port, "/rolled", 3, {"sleep": 0.02}, limit=600) as load:
            wait_until(load.latest, 10, "first answers")
            saved = time.monotonic()
            edit(project / "cortex.yaml", text.replace("version: v1", "version: v2"))
            wait_until(lambda: (load.latest() or {}).get("version") == "v2", 120, "v2")
            first = time.monotonic() - saved
            cli.wait_for(lambda s: s["apis"][0]["status"] == "live" and len(replica_ids(s, "rolled")) == 2
                         and not replica_ids(s, "rolled") & before, timeout=120, what="rollout done")
            done = time.monotonic() - saved
        return first, done, len(load.failures()), len(load.records)
    finally:
        cli("down")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--backend", default="process", choices=["process", "docker"])
    args = ap.parse_args()
    scale = [scale_run(args.backend) for _ in range(args.runs)]
    roll = [rollout_run(args.backend) for _ in range(args.runs)]
    print(f"backend {args.backend}, {args.runs} runs")
    print("load step -> added replica serving: " + ", ".join(f"{t:.1f}s" for t, _ in scale)
          + f" (median {statistics.median(t for t, _ in scale):.1f}s); failed requests: "
          + str(sum(f for _, f in scale)))
    print("save -> first new-version answer: " + ", ".join(f"{r[0]:.1f}s" for r in roll)
          + "; rollout finished: " + ", ".join(f"{r[1]:.1f}s" for r in roll)
          + f"; failed requests: {sum(r[2] for r in roll)} of {sum(r[3] for r in roll)}")


if __name__ == "__main__":
    main()
