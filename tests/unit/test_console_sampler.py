"""The daemon's sampler (cortexd/daemon/sampler.py): one snapshot a second into the history ring,
that second's latency from the change of the gateway's cumulative buckets."""

from __future__ import annotations

from cortexd.daemon.sampler import Sampler
from cortexd.gateway.metrics import APIMetrics
from cortexd.status import Status
from tests.unit.snapshots import NOW, api, snapshot


def test_each_sample_takes_the_seconds_rates_and_latency_and_marks_events():
    snap = snapshot([api("iris")], events=[
        {"at": NOW - 1, "level": "info", "message": "scaling from 1 to 2 replica(s): load", "api": "iris",
         "kind": "scale"}])
    status = Status.from_json(snap)
    metrics = APIMetrics()
    clock = iter([NOW, NOW + 1.0])
    sampler = Sampler(lambda: status, lambda: [("iris", metrics, None)], clock=lambda: next(clock))
    sampler.sample()
    for _ in range(10):
        metrics.record(200, 0.004, 5.0)  # 4 ms each, between the two samples
    sampler.sample()
    ring = sampler.history.of("iris")
    got = ring.since()
    assert got["t"] == [NOW, NOW + 1.0]
    assert got["p50_ms"][0] is None and 3.0 <= got["p50_ms"][1] <= 5.0
    assert got["in_flight"] == [3, 3] and got["ready"] == [1, 1]
    assert [m["kind"] for m in got["marks"]] == ["scale"]
    assert sampler.taken == 2 and sampler.status_json()["apis"][0]["name"] == "iris"
