"""Cortex 0.23 predictors run unchanged in a real replica: what Cortex's own server did, over HTTP.

Each test starts `python -m predictor_runtime` (tests/real_runtime.py's
Runtime) with a predictor written the way Cortex documented it, and checks what a
client sees: the __init__ thread (a sqlite3 handle), starlette responses passed
through (status, headers, media type, streamed bodies), starlette FormData and
UploadFile payloads, starlette QueryParams, legacy `kind: api` answers as Cortex's
Flask server gave them, and a single-model API ignoring a model name.
"""

from __future__ import annotations

import http.client as httpclient
import json
import time

import pytest

from tests.real_daemon import http, post_json

pytestmark = pytest.mark.timeout(60)


def lower(headers: dict) -> dict:
    """Header names are case-insensitive (starlette sends them lowercase, as uvicorn does)."""
    return {k.lower(): v for k, v in headers.items()}


def test_a_sqlite_connection_made_in_init_works_in_predict(runtime):
    # sqlite3 refuses a connection used from another thread than its creator's
    rt = runtime("""
        import sqlite3
        import threading

        class PythonPredictor:
            def __init__(self, config):
                self.db = sqlite3.connect(":memory:")
                self.db.execute("create table labels (id integer, name text)")
                self.db.execute("insert into labels values (1, 'setosa')")
                self.init_thread = threading.get_ident()

            def predict(self, payload):
                (name,) = self.db.execute("select name from labels where id = ?", (payload["id"],)).fetchone()
                return {"label": name, "same_thread": threading.get_ident() == self.init_thread}
    """, threads=1)
    rt.wait_ready()
    status, _, body = post_json(rt.url, {"id": 1})
    assert (status, json.loads(body)) == (200, {"label": "setosa", "same_thread": True}), rt.stderr()


STARLETTE = """
    import os
    import time

    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

    RELEASE = os.path.join(os.path.dirname(__file__), "release")
    DONE = os.path.join(os.path.dirname(__file__), "background-done")


    def wait_for_release():
        deadline = time.monotonic() + 10
        while not os.path.exists(RELEASE) and time.monotonic() < deadline:
            time.sleep(0.02)
        return os.path.exists(RELEASE)


    class PythonPredictor:
        def predict(self, query_params):
            kind = query_params["kind"]
            if kind == "custom":
                response = Response(content=b"a,b\\n1,2\\n", status_code=201, media_type="text/csv",
                                    headers={"X-Model-Version": "7"})
                response.set_cookie("a", "1")
                response.set_cookie("b", "2")
                return response
            if kind == "json":
                return JSONResponse({"queued": True}, status_code=202)
            if kind == "text":
                return PlainTextResponse("I'm a teapot", status_code=418)
            if kind == "sync-stream":
                return StreamingResponse(iter([b"one,", "two,", b"three"]), media_type="text/plain")
            if kind == "async-stream":
                async def chunks():
                    yield b"first\\n"
                    # the client creates RELEASE only after it received the first chunk
                    import asyncio
                    for _ in range(500):
                        if os.path.exists(RELEASE):
                            yield b"second\\n"
                            return
                        await asyncio.sleep(0.02)
                    yield b"never released: the first chunk was not streamed\\n"
                return StreamingResponse(chunks(), media_type="application/x-ndjson",
                                         headers={"X-Stream": "yes"})
            if kind == "background":
                return Response(b"sent", background=BackgroundTask(lambda: open(DONE, "w").close()))
            if kind == "broken-stream":
                def broken():
                    yield b"partial"
                    raise RuntimeError("the generator failed")
                return StreamingResponse(broken())
            raise ValueError(kind)
"""


def test_starlette_responses_pass_status_headers_media_type_and_body(runtime):
    rt = runtime(STARLETTE)
    rt.wait_ready()

    conn = httpclient.HTTPConnection("127.0.0.1", rt.port, timeout=20)
    rt.closing.append(conn)
    conn.request("POST", "/?kind=custom", body=b"")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (201, b"a,b\n1,2\n")
    assert resp.getheader("Content-Type").startswith("text/csv")
    assert resp.getheader("X-Model-Version") == "7"
    cookies = resp.msg.get_all("Set-Cookie")
    assert [c.split(";")[0] for c in cookies] == ["a=1", "b=2"]

    status, headers, body = http("POST", f"{rt.url}/?kind=json", b"")
    assert (status, json.loads(body), lower(headers)["content-type"]) == (202, {"queued": True},
                                                                          "application/json")

    status, headers, body = http("POST", f"{rt.url}/?kind=text", b"")
    assert (status, body) == (418, b"I'm a teapot")
    assert lower(headers)["content-type"].startswith("text/plain")

    status, headers, body = http("POST", f"{rt.url}/?kind=sync-stream", b"")
    assert (status, body) == (200, b"one,two,three")
    assert lower(headers)["transfer-encoding"] == "chunked"

    # the same connection keeps working after each kind (keep-alive, framing intact)
    conn.request("POST", "/?kind=json", body=b"")
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())) == (202, {"queued": True})
    conn.close()


def test_a_streaming_response_streams(runtime, tmp_path):
    rt = runtime(STARLETTE)
    rt.wait_ready()
    conn = httpclient.HTTPConnection("127.0.0.1", rt.port, timeout=20)
    rt.closing.append(conn)
    conn.request("POST", "/?kind=async-stream", body=b"")
    resp = conn.getresponse()
    assert resp.status == 200
    assert (resp.getheader("Content-Type"), resp.getheader("X-Stream")) == ("application/x-ndjson", "yes")
    assert resp.readline() == b"first\n"  # arrives while the generator is still waiting
    (tmp_path / "release").touch()
    assert resp.read() == b"second\n"
    conn.close()


def test_background_tasks_run_after_the_response_and_a_broken_stream_is_cut(runtime, tmp_path):
    rt = runtime(STARLETTE)
    rt.wait_ready()
    status, _, body = http("POST", f"{rt.url}/?kind=background", b"")
    assert (status, body) == (200, b"sent")
    deadline = time.monotonic() + 5
    while not (tmp_path / "background-done").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "background-done").exists()

    conn = httpclient.HTTPConnection("127.0.0.1", rt.port, timeout=20)
    rt.closing.append(conn)
    conn.request("POST", "/?kind=broken-stream", body=b"")
    resp = conn.getresponse()
    assert resp.status == 200  # the headers had gone out
    with pytest.raises(httpclient.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == b"partial"  # never a complete-looking body
    conn.close()
    rt.wait_logged("RuntimeError: the generator failed")
    status, _, _ = http("POST", f"{rt.url}/?kind=json", b"")  # the replica goes on serving
    assert status == 202


def test_form_payloads_are_starlette_formdata_and_uploadfile(runtime):
    rt = runtime("""
        from starlette.datastructures import FormData, UploadFile

        class PythonPredictor:
            async def predict(self, payload):
                upload = payload["image"]
                return {
                    "is_formdata": isinstance(payload, FormData),
                    "is_uploadfile": isinstance(upload, UploadFile),
                    "filename": upload.filename,
                    "content_type": upload.content_type,
                    "read": (await upload.read()).decode(),
                    "file": (upload.file.seek(0), upload.file.read().decode())[1],
                    "label": payload["label"],
                    "tags": payload.getlist("tag"),
                }
    """)
    rt.wait_ready()
    body = (b"--B\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\ncat\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\nx\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"tag\"\r\n\r\ny\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"cat.png\"\r\n"
            b"Content-Type: image/png\r\n\r\nPNG-bytes\r\n--B--\r\n")
    status, _, answer = http("POST", rt.url, body, {"Content-Type": "multipart/form-data; boundary=B"})
    assert status == 200, answer
    assert json.loads(answer) == {
        "is_formdata": True, "is_uploadfile": True, "filename": "cat.png", "content_type": "image/png",
        "read": "PNG-bytes", "file": "PNG-bytes", "label": "cat", "tags": ["x", "y"]}


def test_a_repeated_query_key_gives_the_last_value(runtime):
    rt = runtime("""
        class PythonPredictor:
            def predict(self, query_params):
                return {"get": query_params.get("k"), "item": query_params["k"],
                        "all": query_params.getlist("k"), "dict": dict(query_params)}
    """)
    rt.wait_ready()
    status, _, body = http("POST", f"{rt.url}/?k=1&k=2&q=a%26b", b"")
    assert (status, json.loads(body)) == (200, {"get": "2", "item": "2", "all": ["1", "2"],
                                                "dict": {"k": "2", "q": "a&b"}})


def test_headers_are_starlette_headers_as_cortex_passed_request_headers(runtime):
    rt = runtime("""
        from starlette.datastructures import Headers

        class PythonPredictor:
            def predict(self, payload, headers):
                return {"is_headers": isinstance(headers, Headers), "get": headers.get("x-api-key"),
                        "item": headers["X-Api-Key"], "tags": headers.getlist("x-tag"),
                        "getall": headers.getall("X-Tag"), "missing": headers.get("x-nope", "none"),
                        "has": "X-API-KEY" in headers,
                        "names": [k for k, _ in headers.items() if k.startswith("x-")]}
    """)
    rt.wait_ready()
    conn = httpclient.HTTPConnection("127.0.0.1", rt.port, timeout=30)
    try:
        conn.putrequest("POST", "/")
        for name, value in (("X-Api-Key", "k1"), ("X-Tag", "a"), ("X-Tag", "b"), ("Content-Length", "0")):
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        status, body = resp.status, resp.read()
    finally:
        conn.close()
    assert status == 200, body
    assert json.loads(body) == {"is_headers": True, "get": "k1", "item": "k1", "tags": ["a", "b"],
                                "getall": ["a", "b"], "missing": "none", "has": True,
                                "names": ["x-api-key", "x-tag", "x-tag"]}


def test_a_single_model_api_ignores_a_model_name(runtime, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("42")
    rt = runtime("""
        import os

        class PythonPredictor:
            def __init__(self, python_client):
                self.client = python_client

            def load_model(self, model_path):
                with open(os.path.join(model_path, "weights.txt")) as f:
                    return int(f.read())

            def predict(self, payload):
                return {"named": self.client.get_model(payload["name"]), "default": self.client.get_model()}
    """, model_path=str(model))
    rt.wait_ready()
    status, _, body = post_json(rt.url, {"name": "anything-at-all"})
    assert (status, json.loads(body)) == (200, {"named": 42, "default": 42}), body


LEGACY = """
    def predict(sample, metadata):
        if sample.get("fail"):
            raise ValueError("the sample has no features")
        return sample["answer"]
"""


def test_legacy_kind_api_answers_as_cortex_flask_server(runtime):
    rt = runtime(LEGACY, kind="legacy")
    rt.wait_ready()

    status, headers, body = post_json(rt.url, {"answer": "setosa"})
    assert (status, body) == (200, b'"setosa"')  # a str is a JSON string, not text/plain
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Headers"] == "*"

    status, _, body = post_json(rt.url, {"answer": {"label": 2}})
    assert (status, json.loads(body)) == (200, {"label": 2})

    status, headers, body = post_json(rt.url, {"fail": True})
    assert status == 406
    assert body == b"prediction failed: error: predictor.py: predict: the sample has no features: runtime exception"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert b"Traceback" not in body

    # a CORS preflight, as a browser sends it
    status, headers, body = http("OPTIONS", rt.url, None, {
        "Origin": "http://example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key"})
    assert (status, body) == (200, b"")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Access-Control-Allow-Headers"] == "content-type,x-api-key"

    for method, path in (("GET", "/"), ("GET", "/healthz")):
        status, headers, _ = http(method, rt.url + path)
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    status, headers, _ = http("POST", rt.url, b"{bad", {"Content-Type": "application/json"})
    assert status == 400 and headers["Access-Control-Allow-Origin"] == "*"
    rt.wait_logged("ValueError: the sample has no features")  # the traceback is in the log


def test_a_realtime_api_is_not_given_legacy_answers(runtime):
    # the control for the test above: a RealtimeAPI answers a str as text/plain, without CORS
    rt = runtime("""
        class PythonPredictor:
            def predict(self, payload):
                return payload["answer"]
    """)
    rt.wait_ready()
    status, headers, body = post_json(rt.url, {"answer": "setosa"})
    assert (status, body) == (200, b"setosa")
    assert headers["Content-Type"].startswith("text/plain")
    assert "Access-Control-Allow-Origin" not in headers


@pytest.mark.xdist_group("example-models")  # onnx_files: made once, with test_onnx_tf.py's
def test_onnx_get_model_has_cortex_shape_and_a_single_model_ignores_the_name(replica, onnx_files):
    r = replica("onnx", """
        class ONNXPredictor:
            def __init__(self, onnx_client):
                self.client = onnx_client

            def predict(self, payload):
                model = self.client.get_model("any-name")
                return {
                    "keys": sorted(model),
                    "signature_names": [s.name for s in model["signatures"]],  # onnxruntime NodeArgs
                    "signature_node": type(model["signatures"][0]).__name__,
                    "input_signatures": model["input_signatures"],
                    "session_inputs": [i.name for i in model["session"].get_inputs()],
                    "prediction": self.client.predict(payload, "another-name")[0].tolist(),
                }
    """, model_path=str(onnx_files["logreg"])).wait_ready()
    status, body = r.predict([5.1, 3.5, 1.4, 0.2])
    assert status == 200, body
    assert body == {
        "keys": ["input_signatures", "output_signatures", "session", "signatures"],
        "signature_names": ["input"], "signature_node": "NodeArg",
        "input_signatures": {"input": {"shape": [None, 4], "type": "float32"}},
        "session_inputs": ["input"], "prediction": [0]}
