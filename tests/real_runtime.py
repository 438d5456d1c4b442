"""Driving a real predictor_runtime from tests: one `python -m predictor_runtime` process on a
loopback port, with the predictor and runtime spec a test writes, its logs captured in files.

`Runtime` serves a python predictor; `ModelReplica` a model predictor (onnx, tensorflow) with
its models, model polling and batching. The `runtime` fixture (tests/conftest.py) and the
`replica` fixture (tests/integration/conftest.py) start these and kill them after the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.real_daemon import REPO, free_port, http, post_json


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Runtime:
    """One `python -m predictor_runtime` process with its logs captured in files."""

    def __init__(self, tmp_path: Path, code: str, kind: str = "python", processes: int = 1,
                 threads: int = 1, config: dict | None = None, env: dict | None = None,
                 model_path: str | None = None, unix: str = ""):
        """`unix`: a unix socket path bound here and passed down with --unix-fd, as the process
        backend does (replica_files.gateway_socket)."""
        self.tmp = tmp_path
        self.closing: list = []  # client connections a test opened, closed with the runtime
        (tmp_path / "predictor.py").write_text(textwrap.dedent(code))
        spec = {
            "name": "test-api", "endpoint": "/test-api", "project_dir": str(tmp_path),
            "predictor": {"type": kind, "path": str(tmp_path / "predictor.py"),
                          "python_path": str(tmp_path), "model_path": model_path, "signature_key": None,
                          "models": None, "server_side_batching": None,
                          "processes_per_replica": processes, "threads_per_process": threads,
                          "config": config or {}},
            "monitoring": None,
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # closed in close(): they outlive __init__ as the child's stdout/stderr
        self.out = open(tmp_path / "stdout.log", "wb")  # noqa: SIM115
        self.err = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        argv = [sys.executable, "-m", "predictor_runtime", "--spec", str(tmp_path / "spec.json"),
                "--host", "127.0.0.1", "--port", str(self.port)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            if unix:
                sock.bind(unix)
                argv += ["--unix-fd", str(sock.fileno())]
            self.proc = subprocess.Popen(argv, cwd=str(tmp_path), env=env, stdout=self.out, stderr=self.err,
                                         start_new_session=True, pass_fds=(sock.fileno(),) if unix else ())

    def stderr(self) -> str:
        self.err.flush()
        return (self.tmp / "stderr.log").read_text()

    def wait_logged(self, text: str, timeout: float = 15) -> str:
        """The runtime's stderr once it holds `text` (it writes as it goes: poll, never sleep-and-hope)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.stderr()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the runtime's stderr after {timeout}s:\n{log[-3000:]}")
            time.sleep(0.05)
        return log

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.stderr()}")
            if accepts(self.port):
                return
            time.sleep(0.05)
        raise AssertionError(f"runtime not accepting connections after {timeout}s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 15) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runtime still running after {timeout}s:\n{self.stderr()}") from None

    def close(self) -> None:
        for conn in self.closing:
            conn.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self.out.close()
        self.err.close()


class ModelReplica:
    """One `python -m predictor_runtime` for a model predictor, logs captured in files."""

    def __init__(self, tmp: Path, kind: str, predictor_file: Path | str, *, model_path: str | None = None,
                 models: dict | None = None, batching: dict | None = None, threads: int = 1,
                 signature_key: str | None = None, poll: float = 0.3):
        self.tmp = tmp
        code = predictor_file.read_text() if isinstance(predictor_file, Path) else textwrap.dedent(predictor_file)
        (tmp / "predictor.py").write_text(code)
        spec = {
            "name": "api", "endpoint": "/api", "project_dir": str(tmp),
            "predictor": {"type": kind, "path": str(tmp / "predictor.py"), "python_path": str(tmp),
                          "model_path": model_path, "signature_key": signature_key, "models": models,
                          "server_side_batching": batching, "processes_per_replica": 1,
                          "threads_per_process": threads, "config": {}},
            "monitoring": None,
        }
        (tmp / "spec.json").write_text(json.dumps(spec))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.err = open(tmp / "stderr.log", "wb")  # noqa: SIM115 - closed in close()
        env = {**os.environ, "PYTHONPATH": str(REPO), "CORTEXD_MODEL_POLL_INTERVAL": str(poll),
               "CORTEXD_MODEL_SETTLE": "0.1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "predictor_runtime", "--spec", str(tmp / "spec.json"),
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=str(tmp), env=env, stdout=subprocess.DEVNULL, stderr=self.err, start_new_session=True)

    def stderr(self) -> str:
        self.err.flush()
        return (self.tmp / "stderr.log").read_text()

    def wait_ready(self, timeout: float = 60) -> ModelReplica:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.stderr()}")
            if accepts(self.port):
                return self
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.stderr()}")

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def predict(self, payload, query: str = "") -> tuple[int, object]:
        status, _, body = post_json(self.url + query, payload)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def info(self) -> dict:
        status, _, body = http("GET", self.url)
        assert status == 200
        return json.loads(body)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.err.close()
