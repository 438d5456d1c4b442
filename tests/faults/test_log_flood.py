"""Log floods fill at most the rotation's budget (issue 9 item 5), against a real daemon.

A predictor printing 4 MiB per request, a bounded number of times, with the logs rotated at
1 MiB x 3 files: the replica's log never holds more than 3 MiB, the API keeps answering, and
`cortexd logs --tail` still shows the newest lines. Malformed HTTP requests, a bounded number,
with daemon.log rotated at 64 KiB x 2: daemon.log and its parts stay within 128 KiB.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.builders import write_project
from tests.real_daemon import free_port, post_json

pytestmark = pytest.mark.timeout(120)

MAX_BYTES = 2**20
FILES = 3
DAEMON_LOG_MAX = 64 * 1024

FLOODING = """
import sys

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        chunk = ("flood " + "y" * 90 + "\\n") * 1024  # about 96 KiB
        for _ in range(payload["chunks"]):
            sys.stdout.write(chunk)
        print(f"done {payload['request']}", flush=True)
        return {"request": payload["request"]}
"""


def sizes(list_files) -> dict[str, int]:
    """The sizes of the files `list_files()` names, listed again if rotation renames one mid-way."""
    for _ in range(100):
        try:
            return {p.name: p.stat().st_size for p in list_files()}
        except FileNotFoundError:
            continue  # a rotation moved a file between the listing and its stat
    raise AssertionError("the log folder never held still for one listing")


def log_bytes(folder) -> dict[str, int]:
    return sizes(folder.iterdir) if folder.exists() else {}


def test_a_predictor_printing_4_mib_per_request_fills_at_most_size_x_count(cli, tmp_path):
    port = free_port()
    write_project(tmp_path / "flood", f"- name: flood\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                  f"    path: predictor.py\n  networking:\n    local_port: {port}\n", {"predictor.py": FLOODING})
    cli.env.update(CORTEXD_LOG_MAX_SIZE=str(MAX_BYTES), CORTEXD_LOG_FILES=str(FILES))
    cli("up", "-d", "--backend", "process", "--wait", "60", str(tmp_path / "flood"), check=True)
    url = f"http://127.0.0.1:{port}/flood"
    logs = cli.home / "logs" / "flood"
    peak = 0
    for r in range(10):  # 10 x 4 MiB = 40 MiB printed through a 3 MiB budget
        status, _, body = post_json(url, {"request": r, "chunks": 43}, timeout=60)
        assert status == 200, body
        peak = max(peak, sum(log_bytes(logs).values()))
    deadline = time.monotonic() + 20  # the pump catches up with the last request's output
    while time.monotonic() < deadline:
        tail = cli("logs", "flood", "--tail", "1", check=True).out
        if "done 9" in tail:
            break
        time.sleep(0.2)
    assert "done 9" in tail, tail
    sizes = log_bytes(logs)
    assert all(size <= MAX_BYTES for size in sizes.values()), sizes
    assert len(sizes) <= FILES and max(peak, sum(sizes.values())) <= MAX_BYTES * FILES, (peak, sizes)
    assert cli.api("flood")["status"] == "live"


def test_malformed_requests_keep_daemon_log_within_its_rotation(cli, tmp_path):
    port = free_port()
    write_project(tmp_path / "quiet", f"- name: quiet\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                  f"    path: predictor.py\n  networking:\n    local_port: {port}\n",
                  {"predictor.py": FLOODING})
    cli.env.update(CORTEXD_LOG_MAX_SIZE=str(DAEMON_LOG_MAX), CORTEXD_LOG_FILES="2")
    cli("up", "-d", "--backend", "process", "--wait", "60", str(tmp_path / "quiet"), check=True)
    junk = b"\x16\x03\x01\x02\x00" + b"\xff" * 4000 + b"\r\n\r\n"  # a TLS hello, then garbage
    deadline = time.monotonic() + 20
    sent = 0
    while sent < 3000 and time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(junk)
                s.recv(4096)
            except OSError:
                pass  # the gateway may close first
        sent += 1
    assert sent >= 500
    parts = sizes(lambda: cli.home.glob("daemon.log*"))
    assert sum(parts.values()) <= 2 * DAEMON_LOG_MAX + 8192, parts  # a record may finish a file
    status, _, _ = post_json(f"http://127.0.0.1:{port}/quiet", {"request": 0, "chunks": 0})
    assert status == 200
