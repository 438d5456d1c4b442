"""The console's Host check (DNS rebinding) and what a try-it answer shows (cortexd/console/)."""

from __future__ import annotations

import base64

from cortexd.console.guard import host_allowed
from cortexd.console.server import SHOWN_BODY, _answer_json

NAMES = frozenset({"localhost", "workstation"})


def test_the_host_header_must_name_this_machine():
    for ok in ("127.0.0.1:8889", "localhost:8889", "LOCALHOST", "[::1]:8889", "10.1.2.3", "workstation:8889"):
        assert host_allowed(ok, NAMES), ok
    for bad in (None, "", "evil.example.com:8889", "127.0.0.1.nip.io:8889", "[evil]:1", "localhost.evil.com"):
        assert not host_allowed(bad, NAMES), bad


def test_a_try_it_answer_is_text_when_it_reads_as_text_else_bytes_to_download():
    headers = {"Content-Type": "application/json", "Connection": "keep-alive", "X-Request-Id": "r1"}
    text = _answer_json(200, headers, b'{"a": "<b>"}', 1.234)
    assert text["text"] == '{"a": "<b>"}' and text["latency_ms"] == 1.23
    assert ["Connection", "keep-alive"] not in text["headers"] and ["X-Request-Id", "r1"] in text["headers"]
    binary = _answer_json(200, {"Content-Type": "image/png"}, b"\x89PNG\x00", 1.0)
    assert base64.b64decode(binary["base64"]) == b"\x89PNG\x00" and "text" not in binary
    bad_utf8 = _answer_json(200, {"Content-Type": "text/plain"}, b"\xff\xfe", 1.0)
    assert "base64" in bad_utf8
    big = _answer_json(200, {"Content-Type": "text/plain"}, b"x" * (SHOWN_BODY + 1), 1.0)
    assert big["truncated"] and big["size"] == SHOWN_BODY
