"""The runtime's --unix-fd (the gateway's hop to a process replica): it serves as the port does and
stops with it, what it accepts, and that the predictor's exec'd children do not inherit the
gateway's listener."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from predictor_runtime.unix_http import UnixHTTPConnection
from tests.integration.test_runtime import SERVING
from tests.real_daemon import REPO, post_json
from tests.real_runtime import accepts

SPAWNS = """
import os

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        # what an exec'd child of the predictor holds (os.system, subprocess with close_fds=False)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(w, 1)
            os.execvp("ls", ["ls", "-l", "/proc/self/fd"])
        os.close(w)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return {"fds": out.decode()}
"""


def write_spec(folder: Path, code: str) -> Path:
    (folder / "predictor.py").write_text(textwrap.dedent(code))
    spec = {"name": "t", "endpoint": "/t", "project_dir": str(folder),
            "predictor": {"type": "python", "path": str(folder / "predictor.py"), "python_path": str(folder),
                          "model_path": None, "signature_key": None, "models": None, "server_side_batching": None,
                          "processes_per_replica": 1, "threads_per_process": 1, "config": {}},
            "monitoring": None}
    (folder / "spec.json").write_text(json.dumps(spec))
    return folder / "spec.json"


def run_with(spec: Path, sock: socket.socket) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "predictor_runtime", "--spec", str(spec), "--host", "127.0.0.1", "--port", "0",
         "--unix-fd", str(sock.fileno())],
        pass_fds=(sock.fileno(),), capture_output=True, text=True, timeout=15, cwd=spec.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("kind", ["unbound", "connected"])
def test_a_unix_socket_not_bound_or_already_connected_is_refused_with_the_reason(tmp_path, kind):
    spec = write_spec(tmp_path, "class PythonPredictor:\n    def __init__(self, config): pass\n"
                                "    def predict(self, payload): return 1\n")
    if kind == "unbound":
        sock, other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), None
    else:
        sock, other = socket.socketpair()
    try:
        done = run_with(spec, sock)  # before: it served its port, then hung on a traceback
    finally:
        sock.close()
        if other is not None:
            other.close()
    assert done.returncode == 1
    reason = "is not bound to a path" if kind == "unbound" else "is a connected socket"
    assert "[runtime] error: --unix-fd: descriptor" in done.stderr
    assert reason in done.stderr


def test_the_predictors_exec_d_children_do_not_hold_the_gateways_socket(runtime, short_dir):
    path = f"{short_dir}/sock"
    rt = runtime(SPAWNS, unix=path)
    rt.wait_ready()
    status, body = unix_request(path, "POST", "/", b"{}")
    assert status == 200, body
    fds = json.loads(body)["fds"]
    held = [line for line in fds.splitlines() if "socket:" in line]
    assert held == [], fds  # the child holds no socket of the replica's, the gateway's listener least




def unix_request(path: str, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(path, timeout=10)
    try:
        conn.request(method, target, body=body, headers={"Content-Type": "application/json"} if body else {})
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_the_unix_socket_it_was_given_serves_as_the_port_does_and_closes_with_it(runtime, short_dir):
    path = f"{short_dir}/sock"
    rt = runtime(SERVING, unix=path)
    rt.wait_ready()
    status, body = unix_request(path, "POST", "/?kind=echo", b'{"a": 1}')
    assert status == 200 and json.loads(body)["payload"] == {"a": 1}
    assert unix_request(path, "POST", "/?kind=raise", b"{}")[0] == 500  # the same handler, the same answers
    assert unix_request(path, "GET", "/healthz") == (200, b'{"ok":true}')
    assert post_json(rt.url, {"b": 2})[0] == 200  # the port still serves
    os.killpg(rt.proc.pid, signal.SIGTERM)
    assert rt.wait_exit() == 0, rt.stderr()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(path)  # nobody listens there once the replica is gone


def test_a_unix_socket_is_refused_for_several_processes_with_the_reason(runtime, short_dir):
    rt = runtime(SERVING, processes=2, unix=f"{short_dir}/sock")
    assert rt.wait_exit() == 1
    assert "--unix-fd serves one process per replica only (predictor.processes_per_replica is 2)" in rt.stderr()
    assert not accepts(rt.port)
