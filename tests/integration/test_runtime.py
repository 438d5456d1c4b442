"""predictor_runtime as the daemon runs it: a real subprocess on a loopback port, real HTTP.

Each test writes a predictor and a runtime spec to tmp_path, starts
`python -m predictor_runtime`, waits for the port (the readiness signal), and
checks what a client and the replica's log would show.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from tests.real_daemon import http, pid_alive, post_json
from tests.real_runtime import accepts

pytestmark = pytest.mark.timeout(30)


SERVING = """
    import os
    import time

    class PythonPredictor:
        def __init__(self, config):
            self.config = config
            self.posted = []

        def predict(self, payload, query_params, headers):
            kind = query_params.get("kind", "echo")
            if kind == "echo":
                return {"payload": payload, "config": self.config, "header": headers.get("X-Test")}
            if kind == "text":
                return "plain text"
            if kind == "bytes":
                return b"\\x00\\x01bytes"
            if kind == "raise":
                raise ValueError("the model is unhappy")
            if kind == "set":
                return {1, 2}
            if kind == "posted":
                time.sleep(0.2)  # post_predict runs after the previous response
                return [p for p in self.posted if isinstance(p, dict)]
            return payload

        def post_predict(self, response, payload):
            self.posted.append(payload)
            raise RuntimeError("post_predict failure must not reach the client")
"""


def test_serves_predictions_errors_health_and_usage(runtime):
    rt = runtime(SERVING, config={"answer": 42})
    rt.wait_ready()

    status, headers, body = post_json(f"{rt.url}/test-api", {"x": [1, 2]})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {"payload": {"x": [1, 2]}, "config": {"answer": 42}, "header": None}

    # any POST path predicts (the gateway forwards the original path); headers reach predict
    status, _, body = http("POST", f"{rt.url}/any/path?kind=echo", b'"s"',
                           {"Content-Type": "application/json", "X-Test": "yes"})
    assert (status, json.loads(body)["header"]) == (200, "yes")

    status, headers, body = http("POST", f"{rt.url}/?kind=text", b"")
    assert (status, body) == (200, b"plain text") and headers["Content-Type"].startswith("text/plain")

    status, headers, body = http("POST", f"{rt.url}/?kind=bytes", b"")
    assert (status, body) == (200, b"\x00\x01bytes")
    assert headers["Content-Type"] == "application/octet-stream"

    # raw bytes in, raw bytes out (no Content-Type -> bytes payload)
    status, _, body = http("POST", f"{rt.url}/?kind=raw", b"\xffraw", {"Content-Type": "image/png"})
    assert (status, body) == (200, b"\xffraw")

    status, _, body = http("POST", f"{rt.url}/", b"{bad", {"Content-Type": "application/json"})
    assert status == 400
    assert json.loads(body) == {"error": "invalid JSON body: Expecting property name enclosed in "
                                         "double quotes: line 1 column 2 (char 1)"}

    status, _, body = http("POST", f"{rt.url}/?kind=raise", b"")
    assert status == 500
    assert json.loads(body) == {"error": "predict raised ValueError: the model is unhappy"}
    assert b"Traceback" not in body

    status, _, body = http("POST", f"{rt.url}/?kind=set", b"")
    assert status == 500 and "see the API's logs" in json.loads(body)["error"]

    status, _, body = http("GET", f"{rt.url}/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True})

    for path in ("/", "/test-api"):
        status, _, body = http("GET", rt.url + path)
        usage = json.loads(body)
        assert status == 200
        assert usage["api"] == "test-api" and usage["predictor_type"] == "python"
        assert usage["usage"].startswith("POST a request body to /test-api")

    # post_predict ran for earlier requests; its exceptions never changed a response
    status, _, body = http("POST", f"{rt.url}/?kind=posted", b"")
    assert status == 200 and {"x": [1, 2]} in json.loads(body)

    status, _, _ = post_json(f"{rt.url}/?debug=true&kind=echo", {"secret": "visible-in-debug"})
    assert status == 200

    time.sleep(0.2)  # let the last log lines land
    log = rt.stderr()
    assert "Traceback (most recent call last)" in log
    assert "ValueError: the model is unhappy" in log
    assert "prediction of type set is not JSON serializable" in log
    assert "RuntimeError: post_predict failure must not reach the client" in log
    assert "[worker 1] debug: payload: {'secret': 'visible-in-debug'}" in log
    assert "[worker 1] debug: prediction: " in log


def test_form_payload(runtime):
    rt = runtime("""
        class PythonPredictor:
            def predict(self, payload):
                return {k: payload.getall(k) for k in payload.keys()}
    """)
    rt.wait_ready()
    status, _, body = http("POST", rt.url, b"a=1&b=2&a=3",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert (status, json.loads(body)) == (200, {"a": ["1", "3"], "b": ["2"]})
    multipart = (b"--XX\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n--XX--\r\n")
    status, _, body = http("POST", rt.url, multipart, {"Content-Type": "multipart/form-data; boundary=XX"})
    assert (status, json.loads(body)) == (200, {"field": ["value"]})


SLOW = """
    import os
    import time

    class PythonPredictor:
        def predict(self, payload):
            time.sleep(payload.get("sleep", 0))
            return {"pid": os.getpid()}
"""


def timed_parallel(url: str, bodies: list[dict]) -> tuple[float, list]:
    results: list = [None] * len(bodies)

    def call(i: int) -> None:
        results[i] = post_json(url, bodies[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return time.monotonic() - start, results


MEETING = """
    import threading

    MEET = threading.Barrier(2)

    class PythonPredictor:
        def predict(self, payload):
            try:  # passes only when two predict() calls are inside at the same time
                MEET.wait(timeout=payload["timeout"])
            except threading.BrokenBarrierError:
                return {"met": False}
            return {"met": True}
"""


def test_threads_per_process_runs_requests_concurrently(runtime):
    # an outcome, not a timing: the two requests meet inside predict(), which one thread could not do
    rt = runtime(MEETING, threads=2)
    rt.wait_ready()
    _, results = timed_parallel(rt.url, [{"timeout": 15}, {"timeout": 15}])
    assert [(r[0], json.loads(r[2])) for r in results] == [(200, {"met": True})] * 2


def test_one_thread_serialises_requests(runtime):
    # the control for the test above: with one thread the same requests queue up
    rt = runtime(SLOW, threads=1)
    rt.wait_ready()
    elapsed, _ = timed_parallel(rt.url, [{"sleep": 0.5}, {"sleep": 0.5}])
    assert elapsed >= 1.0


def test_processes_share_the_port_and_all_serve(runtime):
    rt = runtime(SLOW, processes=2)
    rt.wait_ready()
    pids = set()
    for _ in range(6):  # concurrent connections spread over both SO_REUSEPORT sockets
        _, results = timed_parallel(rt.url, [{"sleep": 0.05}] * 4)
        pids |= {json.loads(r[2])["pid"] for r in results}
        if len(pids) == 2:
            break
    assert len(pids) == 2
    assert rt.proc.pid not in pids  # the supervisor itself does not serve


def test_no_connection_is_accepted_before_every_worker_finished_init(runtime, tmp_path):
    # the first worker to start sleeps in __init__; the port must stay closed until it is done
    rt = runtime(f"""
        import os
        import time

        class PythonPredictor:
            def __init__(self):
                try:
                    os.mkdir({str(tmp_path / "slow")!r})
                    time.sleep(1.5)
                except FileExistsError:
                    pass
                open(os.path.join({str(tmp_path)!r}, "done-%d" % os.getpid()), "w").close()

            def predict(self):
                return os.getpid()
    """, processes=2)
    rt.wait_ready()
    assert len(list(tmp_path.glob("done-*"))) == 2


@pytest.mark.parametrize("processes", [1, 2])
def test_failing_init_exits_nonzero_with_traceback_and_never_listens(runtime, tmp_path, processes):
    rt = runtime(f"""
        import os
        import time

        class PythonPredictor:
            def __init__(self, config):
                try:
                    os.mkdir({str(tmp_path / "first")!r})
                except FileExistsError:
                    time.sleep(5)  # the healthy worker: must be stopped by the supervisor
                    return
                raise RuntimeError("cannot load the weights")

            def predict(self):
                return 1
    """, processes=processes)
    deadline = time.monotonic() + 15
    while rt.proc.poll() is None and time.monotonic() < deadline:
        assert not accepts(rt.port), "a connection was accepted although __init__ failed"
        time.sleep(0.05)
    assert rt.wait_exit() == 1
    err = rt.stderr()
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: cannot load the weights" in err
    assert "predictor.py failed to start" in err
    assert not accepts(rt.port)


def test_signature_mistake_is_reported_without_traceback(runtime):
    rt = runtime("""
        class PythonPredictor:
            def __init__(self, cfg):
                pass
            def predict(self, payload):
                return payload
    """)
    assert rt.wait_exit() == 1
    err = rt.stderr()
    assert ("predictor.py: class PythonPredictor: __init__ takes an unknown parameter 'cfg'; "
            "expected any of (self, config, python_client)") in err
    assert "Traceback" not in err


def test_tensorflow_predictor_without_its_class_fails_start_up(runtime):
    rt = runtime("", kind="tensorflow", processes=2)
    assert rt.wait_exit() == 1
    # without TensorFlow installed the replica says which extra to install; with it, what the file lacks
    assert ("no class TensorFlowPredictor defined" in rt.stderr()
            or "pip install 'cortexd[tensorflow]'" in rt.stderr())


def test_legacy_module_predictor(runtime):
    rt = runtime("""
        labels = []

        def init(metadata):
            labels.extend(metadata["labels"])

        def predict(sample, metadata):
            return {"label": labels[sample["index"]], "metadata": metadata}
    """, kind="legacy", config={"labels": ["setosa", "versicolor"]})
    rt.wait_ready()
    status, _, body = post_json(rt.url + "/iris/classifier", {"index": 1})
    assert (status, json.loads(body)) == (200, {"label": "versicolor",
                                                "metadata": {"labels": ["setosa", "versicolor"]}})
    _, _, body = http("GET", rt.url + "/")
    assert json.loads(body)["predictor_type"] == "legacy"


def in_flight(rt) -> int:
    """The runtime's own count of POSTs received and not answered (GET /metrics; summed over workers)."""
    status, _, text = http("GET", rt.url + "/metrics")
    assert status == 200, text
    return int(float(text.decode().rpartition("cortexd_in_flight_requests ")[2]))


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_finishes_in_flight_requests_and_exits_zero(runtime, processes):
    rt = runtime(SLOW, processes=processes)
    rt.wait_ready()
    result: list = []
    request = threading.Thread(target=lambda: result.append(post_json(rt.url, {"sleep": 1.0})))
    request.start()
    # the request is inside the runtime (its /metrics gauge counts it) before the SIGTERM: a fixed
    # sleep could let the signal come first on a loaded machine, and the request be refused
    deadline = time.monotonic() + 10
    while in_flight(rt) < 1:
        assert time.monotonic() < deadline, "the request never reached the runtime"
        time.sleep(0.02)
    os.killpg(rt.proc.pid, signal.SIGTERM)  # as the process backend stops a replica
    request.join(15)
    assert result and result[0][0] == 200
    assert rt.wait_exit() == 0, rt.stderr()
    assert not accepts(rt.port)


def test_a_worker_dying_later_stops_the_replica_nonzero(runtime):
    rt = runtime("""
        import os

        class PythonPredictor:
            def predict(self, payload):
                if payload == b"die":
                    os._exit(3)
                return os.getpid()
    """, processes=2)
    rt.wait_ready()
    status, _, body = http("POST", rt.url, b"ok")
    worker_pids = {int(body)} if status == 200 else set()
    try:
        http("POST", rt.url, b"die", {"Content-Type": "application/octet-stream"}, timeout=5)
    except OSError:
        pass  # the connection dies with the worker
    assert rt.wait_exit() == 1
    assert "exited unexpectedly (exit code 3)" in rt.stderr()
    for pid in worker_pids:
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), "a worker outlived its supervisor"


def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_closed(runtime):
    # a 1 s header timeout set here (the default is the gateway's 60 s) so the test waits 1 s, not 60
    rt = runtime(SERVING, env={"CORTEXD_RUNTIME_HEADER_TIMEOUT": "1"})
    rt.wait_ready()
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as sock:
        sock.sendall(b"POST /test-api HTTP/1.1\r\nHost: x\r\nContent-Le")  # half a head, then nothing
        answer = b""
        while chunk := sock.recv(65536):  # until the runtime closes; past 10 s recv raises
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"\r\nConnection: close" in head
    assert json.loads(body) == {"error": "the request head did not arrive within 1 s"}
    rt.wait_logged("client error (answered 408): HeadTimeout: the request head did not arrive within 1 s")
    status, _, _ = http("GET", rt.url + "/healthz")  # the replica serves on
    assert status == 200


def test_a_body_that_stops_arriving_is_answered_408_and_closed(runtime):
    # a 1 s body timeout set here (the default is the gateway's 60 s) so the test waits 1 s, not 60
    rt = runtime(SERVING, env={"CORTEXD_RUNTIME_BODY_TIMEOUT": "1"})
    rt.wait_ready()
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as sock:
        sock.sendall(b"POST /test-api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 20\r\n\r\n{\"x\":")  # part of the body, then nothing
        answer = b""
        while chunk := sock.recv(65536):  # until the runtime closes; past 10 s recv raises
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"\r\nConnection: close" in head
    assert json.loads(body) == {"error": "the request body did not arrive within 1 s"}
    status, _, _ = http("GET", rt.url + "/healthz")  # the replica serves on
    assert status == 200

