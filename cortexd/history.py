"""What each API did over the last minutes: a bounded ring of one-second samples, and its marks.

The web console's charts (cortexd/console/) and the live view's trend read it. The daemon's
sampler (cortexd/daemon/sampler.py) feeds it once a second, off the request path, with what
the status model already holds (replica counts, in-flight, the gateway's cumulative request
classes) and the latency quantiles of that second; this module only keeps values: no clock,
no I/O. Each API's ring is a fixed set of `array` columns (4 bytes a value), so its size is
set when the API is first seen: SECONDS samples of len(SERIES) values, about 40 KB an API,
whatever the traffic. Events that concern an API (a deploy, a rollout, a scale decision, a
crash: the kind the daemon gives the event) become marks on the same time axis (`mark_kind`), the
last MARKS of them per API.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SECONDS = 900  # 15 minutes at 1 s
MARKS = 200
MARK_KINDS = ("scale", "rollout", "deploy", "crash", "other")  # the console draws each in a colour
TREND_POINTS, TREND_STEP = 24, 5  # the live view's trend: 2 minutes, a point per 5 s
# one value per second each: request rates by status class, latency of that second, in-flight
# requests and replicas; None (no request that second) is stored as NaN and read back as None
SERIES = ("rps_2xx", "rps_4xx", "rps_5xx", "p50_ms", "p99_ms", "in_flight", "requested", "ready", "starting")
_CLASSES = (("rps_2xx", "2xx"), ("rps_4xx", "4xx"), ("rps_5xx", "5xx"))


@dataclass(frozen=True)
class Sample:
    """One API at one second, as the sampler read it: cumulative counters, and the rest as is."""

    api: str
    classes: Mapping[str, int]  # cumulative requests by class ("2xx", "4xx", "5xx")
    p50_ms: float | None  # this second's
    p99_ms: float | None
    in_flight: int
    requested: int
    ready: int
    starting: int


@dataclass(frozen=True)
class Mark:
    at: float  # wall-clock seconds
    kind: str  # one of MARK_KINDS
    message: str


def mark_kind(kind: str | None, level: str) -> str:
    """What a daemon event about an API marks on its charts: the kind the daemon gave it (the
    reconciler's deploys, rollouts, scale decisions and crashes), else an error as a crash."""
    if kind in MARK_KINDS:
        return kind
    return "crash" if level == "error" else "other"


class APIHistory:
    """One API's ring: `size` one-second samples of every SERIES, and its marks."""

    def __init__(self, size: int = SECONDS, marks: int = MARKS):
        self.size = size
        self.times = array("d", bytes(8 * size))
        self.columns = {name: array("f", bytes(4 * size)) for name in SERIES}
        self.count = 0  # samples written so far (the ring holds the last `size`)
        self.marks: deque[Mark] = deque(maxlen=marks)
        self._last: tuple[float, Mapping[str, int]] | None = None

    def add(self, at: float, sample: Sample) -> None:
        """The sample read at wall-clock `at`; rates are the counters' change since the last one."""
        values: dict[str, float] = {}
        last = self._last
        for series, cls in _CLASSES:
            now_n = sample.classes.get(cls, 0)
            if last is None or at <= last[0]:
                values[series] = 0.0
            else:
                values[series] = max(0, now_n - last[1].get(cls, 0)) / (at - last[0])
        self._last = (at, dict(sample.classes))
        values.update(p50_ms=_nan(sample.p50_ms), p99_ms=_nan(sample.p99_ms), in_flight=sample.in_flight,
                      requested=sample.requested, ready=sample.ready, starting=sample.starting)
        slot = self.count % self.size
        self.times[slot] = round(at, 3)  # as since() gives it: a reader's `after` matches it
        for name in SERIES:
            self.columns[name][slot] = values[name]
        self.count += 1

    def since(self, after: float = 0.0) -> dict[str, Any]:
        """The samples later than `after` (wall-clock), oldest first, as JSON-ready columns."""
        n = min(self.count, self.size)
        start = self.count - n
        slots = [i % self.size for i in range(start, self.count) if self.times[i % self.size] > after]
        out: dict[str, Any] = {"t": [round(self.times[s], 3) for s in slots]}
        for name in SERIES:
            column = self.columns[name]
            out[name] = [_value(column[s]) for s in slots]
        out["marks"] = [{"at": m.at, "kind": m.kind, "message": m.message} for m in self.marks if m.at > after]
        return out

    def trend(self, points: int = TREND_POINTS, step: int = TREND_STEP) -> tuple[float, ...]:
        """Requests/s (every class) over the last points x step samples, each point the mean of
        `step` samples, oldest first; fewer points while the ring is younger (the live view's)."""
        n = min(self.count, self.size, points * step)
        total = [sum(self.columns[s][i % self.size] for s in ("rps_2xx", "rps_4xx", "rps_5xx"))
                 for i in range(self.count - n, self.count)]
        return tuple(round(sum(total[i:i + step]) / len(total[i:i + step]), 2) for i in range(0, n, step))


class History:
    """Every API's ring, by name; an API no longer sampled is dropped."""

    def __init__(self, size: int = SECONDS, marks: int = MARKS):
        self.size, self.marks = size, marks
        self.apis: dict[str, APIHistory] = {}
        self._marked_until = 0.0

    def add(self, at: float, samples: Iterable[Sample]) -> None:
        seen = set()
        for sample in samples:
            ring = self.apis.get(sample.api)
            if ring is None:
                ring = self.apis[sample.api] = APIHistory(self.size, self.marks)
            ring.add(at, sample)
            seen.add(sample.api)
        for gone in self.apis.keys() - seen:
            del self.apis[gone]

    def add_events(self, events: Iterable[Any]) -> None:
        """Events (cortexd.status.EventStatus or daemon events: at, level, message, api, kind) not yet
        marked become marks of their API."""
        newest = self._marked_until
        for e in events:
            if e.api is None or e.at <= self._marked_until or e.api not in self.apis:
                continue
            self.apis[e.api].marks.append(Mark(e.at, mark_kind(e.kind, e.level), e.message))
            newest = max(newest, e.at)
        self._marked_until = newest

    def trends(self) -> dict[str, tuple[float, ...]]:
        return {name: ring.trend() for name, ring in self.apis.items()}

    def of(self, api: str) -> APIHistory | None:
        return self.apis.get(api)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _value(v: float) -> float | None:
    return None if v != v else round(v, 3)  # NaN: nothing that second
