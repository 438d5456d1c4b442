"""The gateway under bad input and slow or departing clients, against a real daemon (issue 9).

One daemon (process backend, loopback) serves most tests here, with the client header and
body timeouts shortened through the environment; `down` and a rolling update under
keep-alive load get daemons of their own. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import gzip
import json
import select
import shutil
import socket
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.load import KeepAliveClients
from tests.real_daemon import CLI, free_port, http, post_json, server_has_read

pytestmark = pytest.mark.timeout(120)

# the daemon's client header and body timeouts in this file: long enough that a loaded CI
# machine serves the real clients of the slow-client test before the slow ones time out
CLIENT_TIMEOUT = 5.0

ECHO = """
import os

class PythonPredictor:
    def __init__(self, config):
        self.calls = config["calls"]

    def predict(self, payload):
        size = len(payload) if isinstance(payload, (bytes, str)) else len(repr(payload))
        with open(self.calls, "a") as f:
            f.write(f"{size}\\n")
        return {"size": size, "pid": os.getpid()}
"""

LEAKY = """
import os

class PythonPredictor:
    def __init__(self, config):
        print("connecting with password=hunter2", flush=True)
        raise RuntimeError("could not connect to postgres://admin:hunter2@db.internal/prod")

    def predict(self, payload):
        return 1
"""

VERSIONED = """
class PythonPredictor:
    def __init__(self, config):
        self.version = config["version"]

    def predict(self, payload):
        return {"version": self.version}
"""


def api(name: str, port: int, path: str, extra: str = "") -> str:
    return f"""
- name: {name}
  kind: RealtimeAPI
  predictor:
    type: python
    path: {path}
{extra}  networking:
    local_port: {port}
"""


def start_daemon(home: Path, project: Path, env: dict | None = None) -> CLI:
    cli = CLI(home)
    cli.env.update(env or {})
    cli("up", "-d", "--backend", "process", str(project), check=True)
    return cli


def stop_daemon(cli: CLI) -> None:
    if (cli.home / "cortexd.sock").exists():
        cli("down", timeout=90)
    shutil.rmtree(cli.home, ignore_errors=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One daemon: api `echo` (records every call) and api `leaky` (fails at start, printing a secret)."""
    root = tmp_path_factory.mktemp("gwfaults")
    port, leaky_port = free_port(), free_port()
    calls = root / "calls.log"
    calls.write_text("")
    text = api("echo", port, "echo.py", f"""    config:
      calls: {calls}
  autoscaling:
    min_replicas: 1
    max_replicas: 1
    max_replica_concurrency: 8
""") + api("leaky", leaky_port, "leaky.py")
    project = write_project(root / "project", text, {"echo.py": ECHO, "leaky.py": LEAKY})
    home = Path(tempfile.mkdtemp(prefix="cxd-"))
    cli = start_daemon(home, project, {"CORTEXD_CLIENT_HEADER_TIMEOUT": str(CLIENT_TIMEOUT),
                                       "CORTEXD_CLIENT_BODY_TIMEOUT": str(CLIENT_TIMEOUT)})
    try:
        cli.wait_for(lambda s: any(a["name"] == "echo" and a["status"] == "live" for a in s["apis"]),
                     timeout=60, what="echo live")
        yield cli, port, leaky_port, calls
    finally:
        stop_daemon(cli)


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` on a new connection; everything the gateway answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


# -- 9.1: an API in error tells clients a category, not its log lines ---------------------------


def test_error_answer_carries_no_predictor_output(served):
    cli, _, leaky_port, _ = served
    snap = cli.wait_for(lambda s: any(a["name"] == "leaky" and a["status"] == "error" for a in s["apis"]),
                        timeout=60, what="leaky in error")
    reason = next(a for a in snap["apis"] if a["name"] == "leaky")["reason"]
    assert "hunter2" in reason  # the details are the operator's: `cortexd get`, the control API
    status, headers, body = post_json(f"http://127.0.0.1:{leaky_port}/leaky", {"x": 1})
    assert status == 503
    assert json.loads(body) == {
        "error": "the API is not ready: its predictor failed to start; see `cortexd get leaky`",
        "request_id": headers["X-Request-Id"]}
    assert b"hunter2" not in body and b"Traceback" not in body


# -- 9.2: a decompression bomb is refused by its decoded size -------------------------------------


def test_gzip_bomb_gets_413_and_never_reaches_the_predictor(served):
    _, port, _, calls = served
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = bytes(2**20)
    bomb = b"".join(packer.compress(zeros) for _ in range(300)) + packer.flush()  # 300 MiB inflated
    assert len(bomb) < 400 * 1024
    before = calls.read_text()
    status, _, body = http("POST", f"http://127.0.0.1:{port}/echo", bomb,
                           {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    assert status == 413, body[:300]
    assert calls.read_text() == before  # predict() never ran
    # an honest gzip body is inflated and served
    status, _, body = http("POST", f"http://127.0.0.1:{port}/echo", gzip.compress(b"a" * 1000),
                           {"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"})
    assert (status, json.loads(body)["size"]) == (200, 1000)


# -- 9.4: HTTP/1.0 without Host -------------------------------------------------------------------


def test_http10_request_without_host_is_served(served):
    _, port, _, _ = served
    answer = raw(port, b'POST /echo HTTP/1.0\r\nContent-Type: application/json\r\n'
                       b'Content-Length: 9\r\n\r\n{"a": 12}')
    assert status_of(answer) == 200, answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["size"] > 0


# -- 9.5: a flood of malformed requests costs daemon.log a few lines ------------------------------


@pytest.mark.exclusive  # 2000 requests in 30 s: a rate
def test_malformed_request_flood_barely_grows_the_daemon_log(served):
    cli, port, _, _ = served
    log = cli.home / "daemon.log"
    before = log.stat().st_size
    kinds = [
        b"GARBAGE " + b"\xff" * 4000 + b"\r\n\r\n",  # bad method, raw bytes
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",  # bad header value
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk
    ]
    answers = Counter()
    deadline = time.monotonic() + 30
    for i in range(2000):
        assert time.monotonic() < deadline, f"only {i} malformed requests in 30 s"
        answers[status_of(raw(port, kinds[i % len(kinds)]))] += 1
    assert set(answers) <= {400, 0}, answers  # 0: closed after a chunk error, nothing to answer
    assert answers[400] >= 1500, answers
    grown = log.stat().st_size - before
    new = log.read_bytes()[before:].decode(errors="replace")
    # 20,000 grew it by 331 MB before; the bound is 2 MiB for 20,000, so 200 KiB for these
    # (the other API's crash reports land in the same log meanwhile)
    assert grown < 200 * 1024, f"daemon.log grew {grown} bytes:\n{new[-3000:]}"
    client_lines = [line for line in new.splitlines() if "client error" in line]
    assert 1 <= len(client_lines) <= 3 * len(kinds), client_lines
    assert all(len(line) < 600 for line in client_lines), client_lines
    assert "Error handling request" not in new and "aiohttp" not in new, new[-3000:]
    assert post_json(f"http://127.0.0.1:{port}/echo", {"still": "serving"})[0] == 200


# -- 9.6: slow clients are timed out and hold no replica slot -------------------------------------


def test_slow_clients_hold_no_slot_and_are_closed_after_the_timeout(served):
    cli, port, _, _ = served
    # before the slow connections: each `cortexd` run costs an interpreter start, and all of the
    # checks below must fit in the CLIENT_TIMEOUT that starts as the gateway accepts them
    pid = cli.status()["daemon"]["pid"]
    slow = []
    t0 = time.monotonic()
    for i in range(16):
        # the socket timeout is the generous upper bound: an answer that does not come within
        # 30 s is the gateway's default 60 s timeout, or none (the bug: open after 150 s)
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if i % 4 == 0:  # a head that never ends
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        else:  # a head, then part of a body
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"a\": ")
        slow.append(s)
    try:
        # the gateway has accepted all 16 and read what they sent: the slow requests are
        # inside it (not in the listen backlog) before the real clients come
        deadline = time.monotonic() + 20
        while not server_has_read(pid, port, {s.getsockname()[1] for s in slow}):
            assert time.monotonic() < deadline, "the gateway did not take the slow connections in"
            time.sleep(0.02)
        # max_replica_concurrency is 8 and 12 bodies are unfinished: real clients are served
        for i in range(20):
            status, _, body = post_json(f"http://127.0.0.1:{port}/echo", {"real": i})
            assert status == 200, body
        echo = cli.api("echo")
        assert echo["requests"]["in_flight"] == 0, echo["requests"]
        # ...while the slow ones were still pending, else the above proved nothing
        assert not select.select(slow, [], [], 0)[0], "a slow connection was answered before the checks"
        for s in slow:
            answer = b""
            while chunk := s.recv(65536):  # until the gateway closes the connection
                answer += chunk
            assert status_of(answer) == 408, answer[:300]
            assert b"Connection: close" in answer
            assert f"{CLIENT_TIMEOUT:g} s".encode() in answer, answer[:300]  # the configured timeout
        # not before the timeout (load only makes this longer)
        assert time.monotonic() - t0 >= CLIENT_TIMEOUT
    finally:
        for s in slow:
            s.close()


# -- 9.8: `down` and rolling updates under keep-alive load cut nothing ---------------------------


def test_down_under_keep_alive_load_cuts_no_request(tmp_path):
    port = free_port()
    project = write_project(tmp_path / "down", api("steady", port, "steady.py", """    config:
      version: v1
"""), {"steady.py": VERSIONED})
    cli = start_daemon(Path(tempfile.mkdtemp(prefix="cxd-")), project)
    try:
        cli.wait_for(lambda s: s["apis"] and s["apis"][0]["status"] == "live", timeout=60, what="live")
        with KeepAliveClients(port, "/steady", stop_when_refused=True) as load:
            load.wait_served(20)  # the load is running before `down`, however slow the machine
            down = cli("down", timeout=60)
            assert down.code == 0, down
            # each client sends until the gateway refuses it: every kept-alive connection
            # got its last answer (or its cut) before this returns
            load.wait_ended()
        assert load.outcomes()["cut"] == 0, (load.outcomes(), load.cuts[:5])
        assert set(load.outcomes()) <= {"200", "503-close"}, load.outcomes()
    finally:
        stop_daemon(cli)


def test_rolling_update_under_keep_alive_load_fails_no_request(tmp_path):
    port = free_port()
    text = api("rolled", port, "rolled.py", """    config:
      version: v1
  autoscaling:
    min_replicas: 2
    max_replicas: 2
  update_strategy:
    max_surge: 1
    max_unavailable: 0
""")
    project = write_project(tmp_path / "roll", text, {"rolled.py": VERSIONED})
    cli = start_daemon(Path(tempfile.mkdtemp(prefix="cxd-")), project)
    try:
        cli.wait_for(lambda s: s["apis"] and s["apis"][0]["status"] == "live"
                     and s["apis"][0]["replicas"]["ready"] == 2, timeout=60, what="2 replicas live")
        before = {r["id"] for r in cli.api("rolled")["replica_list"]}
        with KeepAliveClients(port, "/rolled", stop_when_refused=True) as load:
            load.wait_served(20)  # the load is running before the update
            at_change = load.served()
            (project / "cortex.yaml").write_text(text.replace("version: v1", "version: v2"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                now = cli.api("rolled")
                ids = {r["id"] for r in now["replica_list"]}
                if now["status"] == "live" and len(ids) == 2 and not ids & before:
                    break
                time.sleep(0.3)
            else:
                raise AssertionError(f"the rollout did not finish: {now}")
            assert load.served() > at_change, load.outcomes()  # served during the rollout
            load.wait_served(load.served() + 20)  # and by the new replicas after it
        assert set(load.outcomes()) == {"200"}, (load.outcomes(), load.cuts[:5])
        assert load.latest() == {"version": "v2"}
    finally:
        stop_daemon(cli)


# -- request smuggling: a request whose framing is ambiguous never reaches a replica --------------

# After each head, a second request hides in what one reading calls the body: a gateway and a
# replica that frame the bytes differently would disagree on where the next request starts.
_HIDDEN = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
AMBIGUOUS = {
    "Content-Length and Transfer-Encoding": b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                                            % (5 + len(_HIDDEN)) + _HIDDEN,
    "two different Content-Lengths": b"Content-Length: 2\r\nContent-Length: %d\r\n\r\n{}" % (2 + len(_HIDDEN))
                                     + _HIDDEN,
    "a space before the colon": b"Content-Length : %d\r\n\r\n" % len(_HIDDEN) + _HIDDEN,
    "a Transfer-Encoding that is not chunked last": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                                                    + _HIDDEN,
    "an obsolete folded header line": b"Transfer-Encoding:\r\n chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n"
                                      % (5 + len(_HIDDEN)) + _HIDDEN,
    "a bare LF in a header value": b"X-A: 1\nContent-Length: %d\r\n\r\n" % len(_HIDDEN) + _HIDDEN,
    "a negative Content-Length": b"Content-Length: -%d\r\n\r\n" % len(_HIDDEN) + _HIDDEN,
    "a Transfer-Encoding without chunked": b"Transfer-Encoding: gzip\r\n\r\n" + _HIDDEN,
    "an Upgrade with a body": b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: %d\r\n\r\n"
                              % len(_HIDDEN) + _HIDDEN,
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_a_request_with_ambiguous_framing_gets_400_and_reaches_no_replica(served, case):
    _, port, _, calls = served
    before = calls.read_text()
    answer = raw(port, b"POST /echo HTTP/1.1\r\nHost: x\r\n" + AMBIGUOUS[case])
    assert status_of(answer) == 400, answer[:300]
    assert answer.count(b"HTTP/1.") == 1, answer  # one answer, and the connection closed (raw read to the end)
    assert calls.read_text() == before  # neither the request nor the hidden one ran predict()
    assert post_json(f"http://127.0.0.1:{port}/echo", {"still": "serving"})[0] == 200
