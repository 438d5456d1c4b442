"""Per-API request metrics and prediction monitoring, cheap enough for the request path.

    request_path.serve ──record(status, seconds, now)──> APIMetrics  (plain ints, one bisect)
                       ──offer(body)──────────────────> Monitor     (monitored APIs only; parsed later)
    daemon snapshot / Prometheus scrape ──read──> summary() / daemon/prometheus.py

Hot-path rules (docs/architecture.md, "The gateway's hot path"): recording a request is a few integer
increments and one `bisect` into fixed latency bucket bounds; no locks (the
gateway runs on one event loop thread), no lists or dicts built per request.
Rolling windows are rings of one-second slots: the slot for a new second is
cleared when the first request of that second arrives, so idle APIs cost nothing.
Quantiles (p50/p99) are estimated from the bucket counts when read, by linear
interpolation inside the bucket (6 bounds per decade: within ~25% of the truth).

Monitoring (the spec's `monitoring` field, which Cortex only honoured in the
cloud): response bodies of 2xx answers are queued and parsed when someone reads
the summary (or when 256 are queued), never before the response goes out.
`monitoring.key` picks the value out of a JSON object; a body that does not
yield a usable value is counted as unreadable, never an error.

The Prometheus collector that reads these counters at scrape time, beside the
daemon's status snapshot, is the daemon's (cortexd/daemon/prometheus.py); this module
imports nothing of cortexd.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import deque
from typing import Any

# latency bucket upper bounds in seconds: 1, 1.5, 2, 3, 5, 7 x 10^k from 0.1 ms to 7 s, then to 60 s
BOUNDS: tuple[float, ...] = tuple(
    round(m * 10.0**e, 6)
    for e in range(-4, 1)
    for m in (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
) + (10.0, 15.0, 20.0, 30.0, 60.0)
_NB = len(BOUNDS) + 1  # the last bucket is +Inf
_ZEROS = (0,) * _NB

WINDOW_S = 60  # latency quantiles cover the last minute
RATE_S = 10  # requests/s averages the last 10 seconds
MAX_CLASSES = 1000  # distinct classes tracked per API; later new ones count as "other"
REGRESSION_RECENT = 1000  # p50/p99 of a regression value cover the last N predictions
CLASSES_SHOWN = 20


def quantile(counts: list[int] | tuple[int, ...], q: float) -> float | None:
    """Estimate the q-quantile (0..1) of latencies from bucket counts; None if empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lower = BOUNDS[i - 1] if i > 0 else 0.0
            if i >= len(BOUNDS):  # beyond the last bound: the bound is all we know
                return BOUNDS[-1]
            upper = BOUNDS[i]
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return BOUNDS[-1]


class APIMetrics:
    """Request counters of one API: cumulative (Prometheus) and rolling (live view)."""

    __slots__ = ("_sec", "_slot_count", "_slot_hist", "_slot_sec", "buckets", "codes", "sum_s")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}  # status code -> requests, since the daemon started
        self.buckets = [0] * _NB  # cumulative latency histogram (not cumulative across buckets)
        self.sum_s = 0.0
        self._sec = -1  # the second the current slot belongs to
        self._slot_hist = [[0] * _NB for _ in range(WINDOW_S)]
        self._slot_count = [0] * WINDOW_S
        self._slot_sec = [-1] * WINDOW_S  # which second each slot holds (stale slots are skipped)

    def record(self, status: int, seconds: float, now: float) -> None:
        """One finished request: its status, its duration, the monotonic time it ended."""
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1
        i = bisect_left(BOUNDS, seconds)
        self.buckets[i] += 1
        self.sum_s += seconds
        sec = int(now)
        slot = sec % WINDOW_S
        if sec != self._sec:
            self._sec = sec
            if self._slot_sec[slot] != sec:
                self._slot_sec[slot] = sec
                self._slot_count[slot] = 0
                self._slot_hist[slot][:] = _ZEROS
        self._slot_hist[slot][i] += 1
        self._slot_count[slot] += 1

    def add(self, other: APIMetrics) -> None:
        """Count `other`'s requests too (gateway workers: the daemon adds up each worker's)."""
        for code, n in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n
        self.sum_s += other.sum_s
        for slot, sec in enumerate(other._slot_sec):
            if sec < 0 or sec < self._slot_sec[slot]:
                continue  # an empty or older second than the one this slot holds
            if sec > self._slot_sec[slot]:
                self._slot_sec[slot] = sec
                self._slot_count[slot] = 0
                self._slot_hist[slot][:] = _ZEROS
            self._slot_count[slot] += other._slot_count[slot]
            hist = self._slot_hist[slot]
            for i, n in enumerate(other._slot_hist[slot]):
                hist[i] += n
        self._sec = max(self._sec, other._sec)

    # -- reading (status snapshot, once a second at most) ---------------------------

    def classes(self) -> dict[str, int]:
        out = {"2xx": 0, "4xx": 0, "5xx": 0, "total": 0}
        for code, n in self.codes.items():
            out["total"] += n
            if code < 300:
                out["2xx"] += n
            elif code >= 500:
                out["5xx"] += n
            elif code >= 400:
                out["4xx"] += n
        return out

    def requests_per_s(self, now: float) -> float:
        """Average over the last RATE_S whole seconds (the current second is still filling)."""
        sec = int(now)
        total = 0
        for back in range(1, RATE_S + 1):
            s = sec - back
            slot = s % WINDOW_S
            if self._slot_sec[slot] == s:
                total += self._slot_count[slot]
        return total / RATE_S

    def window_histogram(self, now: float) -> list[int]:
        """Latency bucket counts of the last WINDOW_S seconds (including the current one)."""
        sec = int(now)
        merged = [0] * _NB
        for slot in range(WINDOW_S):
            if sec - WINDOW_S < self._slot_sec[slot] <= sec:
                for j, n in enumerate(self._slot_hist[slot]):
                    merged[j] += n
        return merged

    def summary(self, now: float) -> dict[str, Any]:
        hist = self.window_histogram(now)
        p50, p99 = quantile(hist, 0.50), quantile(hist, 0.99)
        return {
            **self.classes(),
            "codes": {str(c): n for c, n in sorted(self.codes.items())},
            "requests_per_s": round(self.requests_per_s(now), 2),
            "latency_window_s": WINDOW_S,
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


class Monitor:
    """Aggregates an API's predictions (Cortex's `monitoring`): class counts or a value's spread."""

    def __init__(self, model_type: str, key: str | None = None):
        self.model_type = model_type  # classification | regression
        self.key = key
        self._pending: list[bytes] = []
        self.predictions = 0  # readable ones
        self.unreadable = 0
        self.class_counts: dict[str, int] = {}
        self.other_classes = 0  # predictions of classes beyond MAX_CLASSES distinct ones
        self.min: float | None = None
        self.max: float | None = None
        self.sum = 0.0
        self._recent: deque[float] = deque(maxlen=REGRESSION_RECENT)

    def offer(self, body: bytes) -> None:
        """Queue a response body (hot path: no parsing here)."""
        pending = self._pending
        pending.append(body)
        if len(pending) >= 256:
            self.drain()

    def add(self, other: Monitor) -> None:
        """Count `other`'s predictions too (gateway workers: the daemon adds up each worker's)."""
        other.drain()
        self.drain()
        self.predictions += other.predictions
        self.unreadable += other.unreadable
        self.other_classes += other.other_classes
        counts = self.class_counts
        for label, n in other.class_counts.items():
            if label in counts:
                counts[label] += n
            elif len(counts) < MAX_CLASSES:
                counts[label] = n
            else:
                self.other_classes += n
        self.sum += other.sum
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
        if other.max is not None:
            self.max = other.max if self.max is None else max(self.max, other.max)
        recent = self._recent
        self._recent = deque(recent, maxlen=(recent.maxlen or 0) + (other._recent.maxlen or 0))
        self._recent.extend(other._recent)

    def drain(self) -> None:
        pending, self._pending = self._pending, []
        for body in pending:
            self.observe(body)

    def observe(self, body: bytes) -> None:
        value = self._extract(body)
        if value is _UNREADABLE:
            self.unreadable += 1
            return
        if self.model_type == "classification":
            label = _class_label(value)
            if label is None:
                self.unreadable += 1
                return
            self.predictions += 1
            counts = self.class_counts
            if label in counts:
                counts[label] += 1
            elif len(counts) < MAX_CLASSES:
                counts[label] = 1
            else:
                self.other_classes += 1
        else:
            number = _number(value)
            if number is None:
                self.unreadable += 1
                return
            self.predictions += 1
            self.sum += number
            self.min = number if self.min is None else min(self.min, number)
            self.max = number if self.max is None else max(self.max, number)
            self._recent.append(number)

    def _extract(self, body: bytes) -> Any:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return _UNREADABLE
        try:
            value = json.loads(text)
        except ValueError:
            # a str prediction is answered as text/plain: the text is the prediction
            value = text if self.key is None else _UNREADABLE
        if self.key is not None:
            if not isinstance(value, dict) or self.key not in value:
                return _UNREADABLE
            value = value[self.key]
        return value

    def summary(self) -> dict[str, Any]:
        self.drain()
        out: dict[str, Any] = {
            "model_type": self.model_type,
            "key": self.key,
            "predictions": self.predictions,
            "unreadable": self.unreadable,
        }
        if self.model_type == "classification":
            ranked = sorted(self.class_counts.items(), key=lambda kv: (-kv[1], kv[0]))
            out["classes"] = [{"class": c, "count": n} for c, n in ranked[:CLASSES_SHOWN]]
            out["more_classes"] = max(0, len(ranked) - CLASSES_SHOWN) + (1 if self.other_classes else 0)
            out["other_predictions"] = sum(n for _, n in ranked[CLASSES_SHOWN:]) + self.other_classes
        else:
            recent = sorted(self._recent)
            out.update({
                "min": self.min,
                "max": self.max,
                "avg": (self.sum / self.predictions) if self.predictions else None,
                "p50": _exact_quantile(recent, 0.50),
                "p99": _exact_quantile(recent, 0.99),
                "recent": len(recent),
            })
        return out


_UNREADABLE = object()


def _class_label(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int)):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _exact_quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
