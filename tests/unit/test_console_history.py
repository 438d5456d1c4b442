"""The console's history ring (cortexd/history.py): rates from cumulative counters, a bounded ring,
marks from the daemon's events."""

from __future__ import annotations

from types import SimpleNamespace

from cortexd.history import SERIES, APIHistory, History, Sample, mark_kind


def sample(api="a", ok=0, client=0, server=0, p50=None, in_flight=0, requested=1, ready=1, starting=0):
    return Sample(api, {"2xx": ok, "4xx": client, "5xx": server}, p50, None if p50 is None else p50 * 2,
                  in_flight, requested, ready, starting)


def test_rates_are_the_change_of_the_counters_per_second():
    ring = APIHistory(size=10)
    ring.add(100.0, sample(ok=50))  # the first sample has nothing to compare with
    ring.add(101.0, sample(ok=60, client=2, p50=3.0, in_flight=4))
    ring.add(103.0, sample(ok=70, client=2, requested=2, starting=1))
    got = ring.since()
    assert got["t"] == [100.0, 101.0, 103.0]
    assert got["rps_2xx"] == [0.0, 10.0, 5.0]
    assert got["rps_4xx"] == [0.0, 2.0, 0.0]
    assert got["p50_ms"] == [None, 3.0, None]  # no request that second: nothing, not zero
    assert got["p99_ms"] == [None, 6.0, None]
    assert got["in_flight"] == [0, 4, 0] and got["requested"] == [1, 1, 2] and got["starting"] == [0, 0, 1]
    assert ring.since(after=101.0)["t"] == [103.0]


def test_a_counter_that_restarts_gives_no_negative_rate():
    ring = APIHistory(size=4)
    ring.add(1.0, sample(ok=100))
    ring.add(2.0, sample(ok=3))
    assert ring.since()["rps_2xx"] == [0.0, 0.0]


def test_the_ring_keeps_the_last_size_samples_in_order_and_its_size_is_fixed():
    ring = APIHistory(size=5)
    before = sum(c.buffer_info()[1] for c in ring.columns.values())
    for t in range(12):
        ring.add(float(t), sample(ok=t * 2))
    got = ring.since()
    assert got["t"] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert got["rps_2xx"] == [2.0] * 5
    assert ring.trend(points=2, step=2) == (2.0, 2.0)
    assert sum(c.buffer_info()[1] for c in ring.columns.values()) == before == 5 * len(SERIES)


def test_apis_no_longer_sampled_are_dropped_and_events_mark_their_api_once():
    history = History(size=8)
    history.add(10.0, [sample("a"), sample("b")])
    events = [SimpleNamespace(at=9.0, level="info", message="scaling from 1 to 2 replica(s): load", api="a",
                              kind="scale"),
              SimpleNamespace(at=9.5, level="info", message="cortexd started", api=None, kind=None),
              SimpleNamespace(at=9.6, level="error", message="replica x exited with code 1", api="b", kind=None)]
    history.add_events(events)
    history.add_events(events)  # seen before: not marked twice
    assert [(m.kind, m.at) for m in history.apis["a"].marks] == [("scale", 9.0)]
    assert [m.kind for m in history.apis["b"].marks] == ["crash"]
    assert history.apis["a"].since(after=9.5)["marks"] == []
    history.add(11.0, [sample("a")])
    assert set(history.apis) == {"a"} and history.of("b") is None


def test_what_each_event_marks():
    assert mark_kind("scale", "info") == "scale" and mark_kind("rollout", "info") == "rollout"
    assert mark_kind("deploy", "info") == "deploy" and mark_kind("crash", "warning") == "crash"
    assert mark_kind(None, "info") == "other" and mark_kind(None, "error") == "crash"  # a failure unnamed
    assert mark_kind("something new", "info") == "other"


def test_the_trend_averages_requests_of_every_class_over_steps():
    ring = APIHistory(size=100)
    for t in range(7):
        ring.add(float(t), sample(ok=t * 4, server=t))
    assert ring.trend(points=3, step=2) == (5.0, 5.0, 5.0)  # the last 6 samples, 4 + 1 a second
    assert APIHistory().trend() == ()
