"""The replica's pure guards: the hung-predictor health rule and the bounded server log."""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import BadHttpMessage

from predictor_runtime.log_limits import RateLimit, ServerLogLimiter, one_line
from predictor_runtime.server import stuck_reason

# ---- /healthz: every predictor thread stuck past the request timeout -------------------


def test_healthy_while_a_thread_is_free_or_calls_are_young():
    assert stuck_reason([], 1, 60, now=1000) is None
    assert stuck_reason([0.0], 2, 60, now=1000) is None  # one of two threads stuck: the other serves
    assert stuck_reason([990.0, 995.0], 2, 60, now=1000) is None  # busy, not stuck
    assert stuck_reason([940.0], 1, 60, now=1000) is None  # exactly the timeout is not past it


def test_unhealthy_once_every_thread_is_stuck():
    assert stuck_reason([939.0], 1, 60, now=1000) == (
        "the predictor thread has been running one request for more than 60s (the request timeout); "
        "the predictor looks hung")
    assert stuck_reason([0.0, 1.0, 999.0], 2, 60, now=1000).startswith(
        "all 2 predictor threads have been running one request for more than 60s")


# ---- the rate limit ---------------------------------------------------------------------


def test_one_event_per_kind_per_interval_with_the_count_suppressed():
    limit = RateLimit(10)
    assert limit.admit("bad header", now=0) == 0
    assert [limit.admit("bad header", now=t) for t in (1, 2, 9.9)] == [None, None, None]
    assert limit.admit("bad chunk", now=5) == 0  # kinds are limited separately
    assert limit.admit("bad header", now=10) == 3
    assert limit.admit("bad header", now=21) == 0


def test_one_line_collapses_and_cuts():
    assert one_line("a\n\n  b\tc") == "a b c"
    text = one_line("x" * 1000, 200)
    assert text.startswith("x" * 200) and text.endswith("... (1000 characters)") and len(text) < 230


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def server_logger(target: logging.Logger, clock: Clock) -> logging.Logger:
    logger = logging.getLogger("test.aiohttp.server")
    logger.handlers[:] = [ServerLogLimiter(target, 10, clock)]
    logger.propagate = False
    return logger


def test_malformed_requests_become_short_warnings_without_tracebacks(caplog):
    clock = Clock()
    target = logging.getLogger("test.runtime")
    logger = server_logger(target, clock)
    bad = BadHttpMessage("Invalid header token:\n\n  b'" + "A" * 5000 + "'\n    ^")
    with caplog.at_level(logging.INFO, logger="test.runtime"):
        for _ in range(100):
            try:
                raise bad
            except BadHttpMessage:
                logger.exception("Error handling request from %s", "127.0.0.1")
        clock.now = 10
        try:
            raise bad
        except BadHttpMessage:
            logger.exception("Error handling request from %s", "127.0.0.1")
    records = [r for r in caplog.records if r.name == "test.runtime"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    first, second = (r.getMessage() for r in records)
    assert first.startswith("client error (answered 400): BadHttpMessage: 400, message: Invalid header token: b'AAA")
    assert len(first) < 300 and "\n" not in first
    assert second.endswith("(99 more like it in the last 10s not logged)")


def test_other_server_errors_keep_their_traceback_but_are_limited_too(caplog):
    clock = Clock()
    target = logging.getLogger("test.runtime2")
    logger = server_logger(target, clock)
    with caplog.at_level(logging.INFO, logger="test.runtime2"):
        for _ in range(5):
            try:
                raise RuntimeError("a bug in the runtime")
            except RuntimeError:
                logger.exception("Unhandled exception")
    records = [r for r in caplog.records if r.name == "test.runtime2"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR and records[0].exc_info is not None


def test_client_bytes_reach_the_replica_log_with_control_characters_escaped(caplog):
    # a client's ESC sequence must not drive the terminal of whoever reads `cortexd logs`
    clock = Clock()
    target = logging.getLogger("test.runtime3")
    logger = server_logger(target, clock)
    with caplog.at_level(logging.INFO, logger="test.runtime3"):
        try:
            raise BadHttpMessage("Invalid header token: b'\x1b[2J\x1b]0;pwned\x07\x00'")
        except BadHttpMessage:
            logger.exception("Error handling request from %s", "127.0.0.1")
    (record,) = [r for r in caplog.records if r.name == "test.runtime3"]
    line = record.getMessage()
    assert "\x1b" not in line and "\x07" not in line and "\x00" not in line
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\x00" in line


def test_one_line_escapes_control_characters_and_keeps_printable_text():
    assert one_line("caf\u00e9 \x1b[31mred\x7f \udcff") == "caf\u00e9 \\x1b[31mred\\x7f \\udcff"


def test_the_gateway_limits_client_errors_with_the_runtime_rate_limit():
    # one implementation: the gateway's ClientErrorLog is the replica's RateLimit
    from cortexd.gateway.client_errors import ClientErrorLog

    assert issubclass(ClientErrorLog, RateLimit)
    assert ClientErrorLog.admit is RateLimit.admit


def test_a_head_timeout_is_a_client_error_answered_408():
    from predictor_runtime.http_server import HeadTimeout
    from predictor_runtime.log_limits import client_error_summary

    assert client_error_summary(HeadTimeout("the request head did not arrive within 60 s")) == \
        "client error (answered 408)"
