"""How the gateway logs what clients get wrong: a line per kind per interval, never a flood.

Malformed requests, header and body timeouts are the client's problem, not the daemon's,
and anyone who can reach a port can send 20,000 of them a second. aiohttp logs each one at
ERROR with a traceback and the raw bytes (up to the 8 KiB line limit, many times over);
the gateway's connection class (proxy.py) sends them here instead. ClientErrorLog decides,
as a pure function of the kind and `now`, whether a line is written: the first of a kind
is, then at most one per `interval`, which says how many like it were left out. What the
client sent is cut to `SHOWN_CHARS` and escaped, so a line is always short and printable.
"""

from __future__ import annotations

SHOWN_CHARS = 200  # characters of client-sent text a log line shows
INTERVAL = 10.0  # seconds between two lines of one kind


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, control characters escaped, '...' when it was cut."""
    safe = text[:limit].encode("ascii", "backslashreplace").decode("ascii")
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in safe)
    if len(text) > limit or len(safe) > limit:  # escapes make it longer: cut again
        return safe[:limit] + "..."
    return safe


class ClientErrorLog:
    """Rate limit for client-error log lines: one per kind per `interval`, with a count."""

    def __init__(self, interval: float = INTERVAL):
        self.interval = interval
        self._last: dict[str, float] = {}  # kind -> when its last line was written
        self._suppressed: dict[str, int] = {}  # kind -> lines left out since then
        self.total = 0  # client errors seen, logged or not

    def admit(self, kind: str, now: float) -> int | None:
        """None: leave this one out. Else write it, saying how many of `kind` were left out before it."""
        self.total += 1
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)

    @staticmethod
    def line(kind: str, detail: str, suppressed: int) -> str:
        """The log line for an admitted client error."""
        more = f" (and {suppressed} more like it since the last such line)" if suppressed else ""
        return f"client error: {kind}: {detail}{more}"
