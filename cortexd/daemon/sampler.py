"""Once a second, the status snapshot into the history ring (cortexd/history.py), off the request path.

The web console (cortexd/console/) and its live updates read what this task took: the latest
snapshot (one status() a second, however many tabs are open) and every API's ring. It reads only
what the status model and the Prometheus collector already read: the snapshot, and each API's
cumulative latency buckets (cortexd/gateway/metrics.py APIMetrics.buckets), whose change over
the second gives that second's p50/p99. Waiters (a tab's event stream) wake on each sample, so
an open tab costs one wake-up a second, never a poll of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from cortexd.gateway.metrics import APIMetrics, Monitor, quantile
from cortexd.history import History, Sample
from cortexd.status import Status

log = logging.getLogger("cortexd")


class Sampler:
    """A task: `run()` samples every `interval` seconds until cancelled."""

    def __init__(self, snapshot: Callable[[], Status],
                 api_metrics: Callable[[], Iterable[tuple[str, APIMetrics, Monitor | None]]],
                 history: History | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self._snapshot = snapshot
        self._api_metrics = api_metrics
        self.history = history or History()
        self.interval = interval
        self._clock = clock
        self.status: Status | None = None
        self._status_json: dict[str, Any] | None = None
        self._buckets: dict[str, list[int]] = {}
        self.taken = 0  # samples taken so far
        self._tick = asyncio.Event()

    def sample(self) -> None:
        """One sample: the snapshot, then each API's second into its ring."""
        status = self._snapshot()
        at = self._clock()
        buckets = {name: list(m.buckets) for name, m, _ in self._api_metrics()}
        samples = []
        for api in status.apis:
            now_b = buckets.get(api.name)
            last_b = self._buckets.get(api.name)
            p50 = p99 = None
            if now_b is not None and last_b is not None:
                delta = [a - b for a, b in zip(now_b, last_b, strict=True)]
                q50, q99 = quantile(delta, 0.5), quantile(delta, 0.99)
                p50 = None if q50 is None else q50 * 1000
                p99 = None if q99 is None else q99 * 1000
            req = api.requests
            samples.append(Sample(api.name, {c: int(req.get(c, 0)) for c in ("2xx", "4xx", "5xx")}, p50, p99,
                                  api.in_flight, api.replicas.requested, api.replicas.ready,
                                  api.replicas.starting))
        self._buckets = buckets
        self.history.add(at, samples)
        self.history.add_events(status.events)
        self.status, self._status_json = status, None
        self.taken += 1
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def status_json(self) -> dict[str, Any] | None:
        """The latest snapshot as JSON, made once per sample however many tabs read it."""
        if self._status_json is None and self.status is not None:
            self._status_json = self.status.to_json()
        return self._status_json

    async def sample_after(self, taken: int) -> None:
        """Returns once more than `taken` samples were taken (at once if they were)."""
        while self.taken <= taken:
            await self._tick.wait()

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad sample must not end the console's history
                log.exception("sampling the status for the console failed")
            await asyncio.sleep(self.interval)
