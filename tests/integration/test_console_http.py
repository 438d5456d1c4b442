"""The web console's HTTP answers (cortexd/console/) on the admin port, in front of a fake daemon:
the Host check, the headers, the token try-it needs, the streams, /metrics beside them."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from cortexd.console import server
from tests.console_fakes import TOKEN, FakeConsole
from tests.real_daemon import http, wait_until


@pytest.fixture
def console():
    c = FakeConsole(50, log_lines=("api-01-r0 | <script>alert(1)</script>", "api-01-r0 | done"))
    c.sample()
    yield c
    c.close()


def test_pages_have_a_strict_policy_and_a_foreign_host_is_refused(console):
    code, headers, body = http("GET", console.url + "/")
    assert code == 200 and b'name="cortexd-token" content="test-token"' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    code, _, body = http("GET", console.url + "/console/status", headers={"Host": "rebound.example.com"})
    assert code == 421 and b"DNS rebinding" in body
    code, _, body = http("GET", console.url + "/static/../../setup.cfg")
    assert code == 404
    assert http("GET", console.url + "/static/console.js")[0] == 200
    code, _, body = http("GET", console.url + "/metrics")  # as it was
    assert code == 200 and b"cortexd_unrouted_requests" in body


def test_try_it_needs_the_token_and_an_unknown_api_is_a_404(console):
    code, _, body = http("POST", console.url + "/console/apis/api-01/try", b"{}")
    assert code == 403 and b"token" in body
    code, _, body = http("POST", console.url + "/console/apis/nosuch/try", b"{}", {"X-Cortexd-Token": TOKEN})
    assert code == 404 and json.loads(body)["error"] == "no api named 'nosuch'"
    assert http("GET", console.url + "/console/apis/nosuch")[0] == 404
    assert http("GET", console.url + "/apis/nosuch/openapi.json")[0] == 404
    code, _, body = http("GET", console.url + "/console/apis/nosuch/logs")
    assert code == 404 and b"no api named" in body
    assert http("GET", console.url + "/console/live?after=yesterday")[0] == 400
    assert http("GET", console.url + "/console/apis/api-01/logs?tail=many")[0] == 400


def test_the_overview_of_50_apis_answers_fast_and_logs_stream_as_json_text(console):
    started = time.perf_counter()
    code, _, body = http("GET", console.url + "/console/status")
    elapsed = time.perf_counter() - started
    assert code == 200 and len(json.loads(body)["apis"]) == 50
    assert elapsed < 0.5, elapsed
    with urllib.request.urlopen(console.url + "/console/apis/api-01/logs?tail=10", timeout=10) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = r.read().decode().split("\n\n")
    assert events[0] == 'data: "<script>alert(1)</script>"' or events[0].startswith('data: "api-01-r0 | <script>')
    assert events[-2].startswith("event: end")


def test_the_live_stream_sends_a_sample_each_tick(console):
    with urllib.request.urlopen(console.url + "/console/live?api=api-01", timeout=10) as r:
        first = json.loads(r.readline().decode()[len("data: "):])
        assert first["api"]["name"] == "api-01" and first["history"]["t"]
        r.readline()
        console.sample()
        second = json.loads(r.readline().decode()[len("data: "):])
        assert second["history"]["t"] and second["history"]["t"][0] > first["history"]["t"][-1]


def test_a_followed_log_stream_ends_soon_after_its_tab_goes_away(console, monkeypatch):
    # a quiet log: the stream finds its closed tab at its next keep-alive comment (15 s; 0.2 s here)
    monkeypatch.setattr(server, "HEARTBEAT_S", 0.2)
    r = urllib.request.urlopen(console.url + "/console/apis/api-01/logs?tail=10&follow=1", timeout=10)
    assert r.readline().startswith(b"data: ")
    r.close()
    wait_until(lambda: console.daemon.streams_ended == 1, timeout=5, what="the log stream to end")
