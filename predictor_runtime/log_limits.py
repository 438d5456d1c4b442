"""The replica's HTTP server log, bounded: one line per kind of error per interval.

The runtime's HTTP server (http_server.py) reports every malformed request (bad
request line, bad header, a line past its limit) through the
`predictor_runtime.http` logger with the exception, whose text may quote the
offending bytes; a client sending garbage in a loop would fill the replica's log
(and the disk) as fast as it sends. `ServerLogLimiter` replaces that logger's output:

- client errors (httptools' parser errors, a request line or header past its
  limit, a head past the header timeout, aiohttp's HttpProcessingError family, a
  connection the client dropped)
  become ONE warning line without a traceback, their text (which quotes the raw
  bytes) collapsed to one line and cut to MESSAGE_LIMIT characters;
- anything else the logger reports (a bug, not the client's doing) keeps its
  traceback;
- of each kind (the exception's class, or the message) at most one line is
  written per interval (env CORTEXD_CLIENT_ERROR_LOG_INTERVAL, seconds,
  default 10); the next line that is written says how many were suppressed.

`RateLimit` is the pure part (a clock value in, a decision out); it is also
the gateway's client-error limit (cortexd/gateway/client_errors.py imports it:
cortexd may import the runtime, never the other way round). `one_line` and
`printable` make client-sent text safe for a log line: control characters
(an ESC that would drive the reader's terminal, NUL) are written as escapes.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

INTERVAL_ENV = "CORTEXD_CLIENT_ERROR_LOG_INTERVAL"
DEFAULT_INTERVAL = 10.0
MESSAGE_LIMIT = 200


class RateLimit:
    """At most one admitted event per kind per `interval`; counts what it turned away."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: dict[str, float] = {}  # kind -> when its last event was admitted
        self._suppressed: dict[str, int] = {}  # kind -> events dropped since then
        self.total = 0  # events seen, admitted or not

    def admit(self, kind: str, now: float) -> int | None:
        """None: drop this event. Else: admitted, with the number dropped since the last admitted one."""
        self.total += 1
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)


def printable(text: str) -> str:
    """`text` with every unprintable character (controls, lone surrogates) as its Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Whitespace (newlines too) collapsed, control characters escaped, cut to `limit` characters."""
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= limit else f"{flat[:limit]}... ({len(flat)} characters)"


def interval_from_env() -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value >= 0 else DEFAULT_INTERVAL


def client_error_summary(exc: BaseException | None) -> str | None:
    """What a client-caused error was (None: not the client's doing)."""
    import httptools
    from aiohttp.http_exceptions import HttpProcessingError

    from predictor_runtime.http_server import HeadTimeout, LimitExceeded

    if isinstance(exc, HttpProcessingError):
        return f"client error (answered {exc.code})"
    if isinstance(exc, HeadTimeout):
        return "client error (answered 408)"
    if isinstance(exc, (httptools.HttpParserError, LimitExceeded)):
        return "client error (answered 400)"
    if isinstance(exc, ConnectionError):
        return "client connection lost"
    return None


class ServerLogLimiter(logging.Handler):
    """A handler for the server's logger that writes bounded lines to `target` (see the module docstring)."""

    def __init__(self, target: logging.Logger, interval: float,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(logging.INFO)
        self.target = target
        self.limit = RateLimit(interval)
        self.clock = clock

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        client_error = client_error_summary(exc)
        kind = type(exc).__name__ if exc is not None else one_line(record.getMessage(), 60)
        suppressed = self.limit.admit(kind, self.clock())
        if suppressed is None:
            return
        more = (f" ({suppressed} more like it in the last {self.limit.interval:g}s not logged)"
                if suppressed else "")
        if client_error is not None:
            self.target.warning("%s: %s: %s%s", client_error, kind, one_line(str(exc)), more)
        else:
            self.target.error("%s%s", one_line(record.getMessage()), more,
                              exc_info=record.exc_info if exc is not None else None)


def install(target: logging.Logger) -> ServerLogLimiter:
    """Route the HTTP server's logger through a ServerLogLimiter writing to `target`."""
    handler = ServerLogLimiter(target, interval_from_env())
    server_log = logging.getLogger("predictor_runtime.http")
    server_log.handlers[:] = [handler]
    server_log.setLevel(logging.INFO)  # debug chatter stays out
    server_log.propagate = False
    # python-multipart warns about every malformed body it sees; the client got 400 already
    for name in ("python_multipart", "multipart"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return handler
