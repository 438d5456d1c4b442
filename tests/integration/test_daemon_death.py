"""A daemon that dies without stopping its replicas (SIGKILL, OOM killer) does not orphan them."""

from __future__ import annotations

import os
import signal
import time

from tests.builders import LOGGING_ECHO_PREDICTOR, write_project
from tests.real_daemon import free_port, pid_alive, replica_pids, session_members

YAML = """
- name: one
  kind: RealtimeAPI
  predictor:
    type: python
    path: echo.py
  networking:
    local_port: {port}

- name: two
  kind: RealtimeAPI
  predictor:
    type: python
    path: echo.py
    processes_per_replica: 2
  networking:
    local_port: {port}
"""


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if pid_alive(p) or session_members(p)]
        if not left:
            return []
        time.sleep(0.1)
    return left


def test_replicas_stop_when_the_daemon_is_killed(cli, tmp_path):
    project = write_project(tmp_path / "p", YAML.format(port=free_port()), {"echo.py": LOGGING_ECHO_PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    snap = cli.status()
    assert all(a["status"] == "live" for a in snap["apis"]), snap
    pids = replica_pids(snap)
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    workers = [m for p in pids for m in session_members(p) if m != p]
    assert len(workers) == 2  # api two's supervisor runs two workers

    os.kill(snap["daemon"]["pid"], signal.SIGKILL)
    try:
        left = wait_gone(pids + workers, timeout=15)
        assert left == [], f"replica processes outlived the daemon: {left}"
    finally:
        for p in pids:
            try:
                os.killpg(p, signal.SIGKILL)
            except OSError:
                pass
        (cli.home / "cortexd.sock").unlink(missing_ok=True)  # no daemon to `down`
