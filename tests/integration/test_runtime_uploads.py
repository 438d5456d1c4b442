"""Uploads, legacy CORS on early-sent answers, and the replica's env settings, over real HTTP.

A replica (tests/real_runtime.py's Runtime) sends some answers itself before
its handler returns: with file uploads (the files stay open until the answer is sent) and
with a post_predict (which runs after it). These tests check what a client sees then:
a legacy `kind: api` answer keeps its CORS headers, uploaded files are closed whatever
predict did, a truncated multipart body is a 400, and a replica given absurd numbers in its
environment starts anyway and says which setting it ignored.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.real_daemon import http

pytestmark = pytest.mark.timeout(60)

MULTIPART_TYPE = "multipart/form-data; boundary=B"
UPLOAD = (b"--B\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\ncat\r\n"
          b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cat.png\"\r\n"
          b"Content-Type: image/png\r\n\r\nPNG-bytes\r\n--B--\r\n")


def test_a_legacy_api_answers_an_upload_with_its_cors_headers(runtime):
    rt = runtime("""
        def predict(sample, metadata):
            return {"label": sample["label"], "file": sample["image"].filename}
    """, kind="legacy")
    rt.wait_ready()
    status, headers, body = http("POST", rt.url, UPLOAD, {"Content-Type": MULTIPART_TYPE,
                                                          "Access-Control-Request-Headers": "x-key"})
    assert (status, json.loads(body)) == (200, {"label": "cat", "file": "cat.png"})
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Headers"] == "x-key"

    # a failing predict on an upload: the 406 carries them too
    rt2 = runtime("""
        def predict(sample, metadata):
            raise ValueError("no cats")
    """, kind="legacy")
    rt2.wait_ready()
    status, headers, body = http("POST", rt2.url, UPLOAD, {"Content-Type": MULTIPART_TYPE})
    assert status == 406 and b"no cats" in body
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_uploads_are_closed_after_the_answer_even_when_predict_raises(runtime):
    rt = runtime("""
        class PythonPredictor:
            def __init__(self, config):
                self.kept = []

            def predict(self, payload, query_params):
                if query_params.get("report"):
                    return {"closed": [upload.file.closed for upload in self.kept]}
                self.kept.append(payload["image"])
                if query_params.get("fail"):
                    raise RuntimeError("predict failed on purpose")
                return {"ok": True}
    """)
    rt.wait_ready()
    status, _, _ = http("POST", rt.url + "/?fail=1", UPLOAD, {"Content-Type": MULTIPART_TYPE})
    assert status == 500
    status, _, _ = http("POST", rt.url, UPLOAD, {"Content-Type": MULTIPART_TYPE})
    assert status == 200
    status, _, body = http("POST", rt.url + "/?report=1", b"")
    assert (status, json.loads(body)) == (200, {"closed": [True, True]})


def test_post_predict_gets_open_uploads_and_they_are_closed_after_it(runtime):
    rt = runtime("""
        class PythonPredictor:
            def __init__(self, config):
                self.seen = []

            def predict(self, payload, query_params):
                if query_params.get("report"):
                    return {"seen": self.seen,
                            "closed_now": [u.file.closed for u in getattr(self, "kept", [])]}
                return {"ok": True}

            def post_predict(self, response, payload):
                upload = payload["image"]
                self.kept = [upload]
                upload.file.seek(0)
                self.seen.append({"read": upload.file.read().decode(), "closed": upload.file.closed})
    """)
    rt.wait_ready()
    status, _, _ = http("POST", rt.url, UPLOAD, {"Content-Type": MULTIPART_TYPE})
    assert status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, _, body = http("POST", rt.url + "/?report=1", b"")
        if json.loads(body)["closed_now"] == [True]:
            break
        time.sleep(0.05)
    assert json.loads(body) == {"seen": [{"read": "PNG-bytes", "closed": False}], "closed_now": [True]}


def test_a_truncated_multipart_body_is_a_400_not_an_empty_form(runtime):
    rt = runtime("""
        class PythonPredictor:
            def predict(self, payload):
                return {"fields": sorted(payload.keys())}
    """)
    rt.wait_ready()
    cut = UPLOAD[:-len(b"--B--\r\n")]
    status, _, body = http("POST", rt.url, cut, {"Content-Type": MULTIPART_TYPE})
    assert (status, json.loads(body)) == (400, {
        "error": "invalid multipart/form-data body: the body ends before its closing boundary (truncated)"})
    status, _, body = http("POST", rt.url, UPLOAD, {"Content-Type": MULTIPART_TYPE})
    assert (status, json.loads(body)) == (200, {"fields": ["image", "label"]})


@pytest.mark.parametrize(("name", "value"), [
    ("CORTEXD_MAX_BODY_SIZE", "1e400"),  # int(float("1e400")) raised OverflowError
    ("CORTEXD_MAX_BODY_SIZE", "nan"),
    ("CORTEXD_REQUEST_TIMEOUT", "nan"),  # NaN passed as a float setting
    ("CORTEXD_REQUEST_TIMEOUT", "inf"),
    ("CORTEXD_DRAIN_SECONDS", "-inf"),
])
def test_absurd_env_numbers_are_reported_and_the_replica_serves(runtime, name, value):
    rt = runtime("""
        class PythonPredictor:
            def predict(self, payload):
                return {"ok": True}
    """, env={name: value})
    rt.wait_ready()
    status, _, body = http("POST", rt.url, b"{}", {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {"ok": True})
    status, _, body = http("GET", rt.url + "/healthz")
    assert status == 200, body
    assert f"error: {name}={value!r} is not a positive number up to" in rt.stderr()
