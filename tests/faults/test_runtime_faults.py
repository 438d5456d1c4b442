"""Bad input and a hung predictor against a real replica runtime (`python -m predictor_runtime`).

The gateway may forward a body untouched (Content-Encoding included), so the
replica itself holds the line: a decompression bomb is refused at the decoded
limit with 413 before the predictor sees it, malformed input is a 400 with a
one-line reason, a flood of malformed requests leaves a few bounded log lines,
and a predictor stuck past the request timeout turns /healthz to 503. Loopback
only; every loop is bounded in count and time.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib

import pytest

from tests.real_daemon import http

pytestmark = pytest.mark.timeout(60)

RECORDER = """
    import json
    import os

    SEEN = os.path.join(os.path.dirname(__file__), "seen")

    class PythonPredictor:
        def predict(self, payload):
            with open(SEEN, "a") as f:
                f.write("called\\n")
            if isinstance(payload, (bytes, bytearray)):
                return {"bytes": len(payload)}
            if hasattr(payload, "multi_items"):
                return {"form": sorted(payload.keys())}
            return {"json_items": len(payload) if hasattr(payload, "__len__") else payload}
"""


def gzip_bomb(inflated: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * 2**20
    parts = [c.compress(block) for _ in range(inflated // len(block))]
    return b"".join(parts) + c.flush()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_decompression_bomb_is_413_at_the_decoded_limit(runtime, tmp_path):
    rt = runtime(RECORDER)
    rt.wait_ready()
    bomb = gzip_bomb(300 * 2**20)  # ~300 KiB on the wire, 300 MiB inflated
    assert len(bomb) < 2**20
    status, _, body = http("POST", rt.url, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert (status, json.loads(body)) == (413, {"error": "the decoded request body is larger than the limit "
                                                         "of 32 MiB"})
    assert not (tmp_path / "seen").exists(), "the predictor was called with the bomb"
    assert peak_rss_mib(rt.proc.pid) < 200, "the replica inflated far past the limit"

    # a gzip body within the limit reaches the predictor decoded
    small = json.dumps(list(range(1000))).encode()
    status, _, body = http("POST", rt.url, gzip.compress(small),
                           {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert (status, json.loads(body)) == (200, {"json_items": 1000})
    c = zlib.compressobj()
    status, _, body = http("POST", rt.url, c.compress(b"x" * 5000) + c.flush(),
                           {"Content-Type": "application/octet-stream", "Content-Encoding": "deflate"})
    assert (status, json.loads(body)) == (200, {"bytes": 5000})


def test_the_limit_is_configurable_and_holds_for_forms_and_plain_bodies(runtime):
    rt = runtime(RECORDER, env={"CORTEXD_MAX_BODY_SIZE": "4096"})
    rt.wait_ready()
    for headers in ({"Content-Type": "application/octet-stream"},
                    {"Content-Type": "application/x-www-form-urlencoded"},
                    {"Content-Type": "multipart/form-data; boundary=B"},
                    {"Content-Type": "application/json", "Content-Encoding": "gzip"}):
        body = b"a" * 5000
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.compress(b"[" + b"1," * 2500 + b"1]")
        status, _, answer = http("POST", rt.url, body, headers)
        assert status == 413, (headers, answer)
        assert "larger than the limit of 4 KiB" in json.loads(answer)["error"]
    status, _, _ = http("POST", rt.url, b"a" * 4096, {"Content-Type": "application/octet-stream"})
    assert status == 200


@pytest.mark.parametrize(("body", "headers", "status", "reason"), [
    (b"[" * 200_000 + b"]" * 200_000, {"Content-Type": "application/json"}, 400,
     "invalid JSON body: nested too deeply"),
    (b"definitely not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400,
     "invalid gzip body (Content-Encoding: gzip): Error -3 while decompressing data: incorrect header check"),
    (gzip.compress(b'{"a": 1}' * 50)[:-10], {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400,
     "invalid gzip body (Content-Encoding: gzip): the compressed data ends early (truncated)"),
    (b"--B\r\nno end of headers", {"Content-Type": "multipart/form-data; boundary=B"}, 400,
     "invalid multipart/form-data body: Invalid multipart data."),
    (b"--B\r\n\r\n", {"Content-Type": "multipart/form-data"}, 400,
     "invalid multipart/form-data body: Missing boundary in multipart."),
    (b"x", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415,
     "Content-Encoding 'br' is not supported; send the body unencoded, gzip or deflate"),
], ids=["deep-json", "not-gzip", "truncated-gzip", "multipart-cut", "multipart-no-boundary", "brotli"])
def test_bad_client_input_is_4xx_with_a_one_line_reason(runtime, tmp_path, body, headers, status, reason):
    rt = runtime(RECORDER)
    rt.wait_ready()
    got, _, answer = http("POST", rt.url, body, headers)
    assert (got, json.loads(answer)) == (status, {"error": reason})
    assert not (tmp_path / "seen").exists()
    status, _, _ = http("POST", rt.url, b"{}", {"Content-Type": "application/json"})  # still serving
    assert status == 200
    assert "Traceback" not in rt.stderr()


def send_raw(port: int, *pieces: bytes, pause: float = 0.0) -> bytes:
    """Send raw bytes (pausing between pieces), return all the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for piece in pieces:
            s.sendall(piece)
            time.sleep(pause)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError:  # a timeout or a reset ends the answer
            pass
    return b"".join(chunks)


def in_flight(rt) -> int:
    """The replica's own count of POSTs received and not answered (its GET /metrics gauge)."""
    status, _, text = http("GET", rt.url + "/metrics")
    assert status == 200, text
    return int(float(text.decode().rpartition("cortexd_in_flight_requests ")[2]))


def wait_in_flight(rt, count: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while (now := in_flight(rt)) != count:
        assert time.monotonic() < deadline, f"{what}: {now} request(s) in flight, not {count}"
        time.sleep(0.02)


def test_a_client_that_breaks_its_body_midway_leaves_no_traceback(runtime, tmp_path):
    rt = runtime(RECORDER)
    rt.wait_ready()
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\n[1, \r\n")
    with socket.create_connection(("127.0.0.1", rt.port), timeout=5) as s:
        s.sendall(head)
        wait_in_flight(rt, 1, "the handler reading the chunked body")  # the break lands mid-body
        s.sendall(b"ZZ\r\nnot a chunk\r\n")
    wait_in_flight(rt, 0, "the handler ending after the broken chunk")
    # and one that goes away in the middle of a Content-Length body
    with socket.create_connection(("127.0.0.1", rt.port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        wait_in_flight(rt, 1, "the handler reading the Content-Length body")
    wait_in_flight(rt, 0, "the handler ending when its client went away")
    status, _, _ = http("POST", rt.url, b"{}", {"Content-Type": "application/json"})
    assert status == 200  # still serving
    assert (tmp_path / "seen").read_text() == "called\n"  # only the good request reached predict
    assert "Traceback" not in rt.stderr(), rt.stderr()


def test_a_flood_of_malformed_requests_leaves_a_few_short_log_lines(runtime):
    rt = runtime(RECORDER, env={"CORTEXD_CLIENT_ERROR_LOG_INTERVAL": "1"})
    rt.wait_ready()
    garbage = [b"POST / HTTP/1.1\r\nHost: x\r\nBad\x01Header: " + b"A" * 8000 + b"\r\n\r\n",
               b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZZ\r\n" + b"B" * 8000,
               b"\x16\x03\x01 not http at all " + b"C" * 8000 + b"\r\n\r\n"]
    answers = [send_raw(rt.port, garbage[i % len(garbage)]) for i in range(150)]
    assert sum(b" 400 Bad Request\r\n" in a[:40] for a in answers) >= 100
    time.sleep(1.1)
    send_raw(rt.port, garbage[0])  # the next interval: one line with the count of those suppressed
    time.sleep(0.3)
    status, _, _ = http("POST", rt.url, b"{}", {"Content-Type": "application/json"})
    assert status == 200
    log = rt.stderr()
    lines = [line for line in log.splitlines() if "client error" in line]
    assert 1 <= len(lines) <= 8, log[-3000:]
    assert all(len(line) < 400 for line in lines), max(lines, key=len)
    assert "Traceback" not in log
    assert "AAAAAAAAAA" * 30 not in log  # raw bytes are cut
    assert any("more like it in the last 1s not logged" in line for line in lines), lines
    assert len(log) < 20_000


def test_healthz_is_503_once_every_predictor_thread_is_stuck_past_the_request_timeout(runtime):
    rt = runtime("""
        import threading

        FOREVER = threading.Event()

        class PythonPredictor:
            def predict(self, payload):
                if payload == {"hang": True}:
                    FOREVER.wait()  # a predictor that never returns
                return {"ok": True}
    """, threads=2, env={"CORTEXD_REQUEST_TIMEOUT": "1"})
    rt.wait_ready()

    def hang() -> None:
        try:
            http("POST", rt.url, b'{"hang": true}', {"Content-Type": "application/json"}, timeout=8)
        except OSError:
            pass  # the client gives up; the predictor thread stays stuck

    first = threading.Thread(target=hang, daemon=True)
    first.start()
    wait_in_flight(rt, 1, "the hanging request inside the predictor")
    time.sleep(1.5)  # past the 1 s request timeout (a loaded machine only makes it longer)
    # one of two threads stuck: still healthy, and the other thread still answers
    status, _, body = http("GET", rt.url + "/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True})
    status, _, _ = http("POST", rt.url, b"{}", {"Content-Type": "application/json"}, timeout=5)
    assert status == 200

    second = threading.Thread(target=hang, daemon=True)
    second.start()
    deadline = time.monotonic() + 20  # stuck past 1 s: generous for a loaded machine
    status, body = 200, b""
    while time.monotonic() < deadline:
        status, _, body = http("GET", rt.url + "/healthz", timeout=5)
        if status == 503:
            break
        time.sleep(0.2)
    assert status == 503, body
    assert json.loads(body) == {"ok": False, "reason": (
        "all 2 predictor threads have been running one request for more than 1s (the request timeout); "
        "the predictor looks hung")}
