"""How the gateway logs what clients get wrong: a line per kind per interval, never a flood.

Malformed requests, header and body timeouts are the client's problem, not the daemon's,
and anyone who can reach a port can send 20,000 of them a second. aiohttp logs each one at
ERROR with a traceback and the raw bytes (up to the 8 KiB line limit, many times over);
the gateway's connection class (client_connection.py) sends them here instead.
ClientErrorLog decides, as a pure function of the kind and `now`, whether a line is
written: the first of a kind is, then at most one per `interval`, which says how many like
it were left out. The decision is the replica's own (predictor_runtime/log_limits.py's
RateLimit, which limits aiohttp's log inside a replica the same way): one implementation
for both. What the client sent is cut to `SHOWN_CHARS` and escaped, so a line is always
short, ASCII and printable.
"""

from __future__ import annotations

from predictor_runtime.log_limits import RateLimit, printable

SHOWN_CHARS = 200  # characters of client-sent text a log line shows
INTERVAL = 10.0  # seconds between two lines of one kind


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, non-ASCII and control characters escaped, '...' when it was cut."""
    safe = printable(text[:limit].encode("ascii", "backslashreplace").decode("ascii"))
    if len(text) > limit or len(safe) > limit:  # escapes make it longer: cut again
        return safe[:limit] + "..."
    return safe


class ClientErrorLog(RateLimit):
    """Rate limit for client-error log lines: one per kind per `interval`, with a count (`total`: all seen)."""

    def __init__(self, interval: float = INTERVAL):
        super().__init__(interval)

    @staticmethod
    def line(kind: str, detail: str, suppressed: int) -> str:
        """The log line for an admitted client error."""
        more = f" (and {suppressed} more like it since the last such line)" if suppressed else ""
        return f"client error: {kind}: {detail}{more}"
