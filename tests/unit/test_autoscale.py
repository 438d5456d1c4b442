"""core.autoscale: Cortex 0.23's concurrency autoscaler and the HPA rule, on a fake clock."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from cortexd.core.autoscale import (
    TICK_INTERVAL,
    AutoscalerState,
    CpuSample,
    Sample,
    cpu_decide,
    decide,
    samples_to_keep,
)
from cortexd.spec.model import AutoscalingSpec

# stabilization off, so single ticks show the recommendation rules alone
NO_STAB = {"downscale_stabilization_period": 0.0, "upscale_stabilization_period": 0.0}


def spec(**overrides) -> AutoscalingSpec:
    return dataclasses.replace(AutoscalingSpec(), **overrides)


def steady(value: float, now: float, window: float = 60.0) -> list[Sample]:
    """One sample a second over the window, all `value`."""
    return [Sample(now - i, value) for i in range(int(window))]


def tick(s: AutoscalingSpec, current: int, avg: float, now: float = 1000.0):
    return decide(s, steady(avg, now, s.window), AutoscalerState(), current, start=0.0, now=now)


class Sim:
    """The daemon's loop in miniature: a sample each second, a decision every 10 s."""

    def __init__(self, s: AutoscalingSpec, current: int, start: float = 0.0) -> None:
        self.spec, self.current, self.start = s, current, start  # start: deploy time
        self.now = 0
        self.samples: list[Sample] = []
        self.state = AutoscalerState()
        self.decisions = []

    def run(self, seconds: int, in_flight: float) -> None:
        for _ in range(seconds):
            self.now += 1
            self.samples.append(Sample(self.now, in_flight))
            self.samples = self.samples[-samples_to_keep(self.spec):]
            if self.now % TICK_INTERVAL == 0:
                d, self.state = decide(self.spec, self.samples, self.state,
                                       self.current, self.start, self.now)
                self.decisions.append(d)
                self.current = d.request

    def replicas_at(self) -> list[tuple[float, int]]:
        return [(d.at, d.request) for d in self.decisions]


@pytest.mark.parametrize(
    "case, overrides, current, avg, expected",
    [
        ("on target", {}, 4, 4.0, 4),
        ("ceil of raw", {}, 4, 4.5, 5),
        ("target concurrency divides", {"target_replica_concurrency": 2.0}, 4, 10.0, 5),
        # 5% tolerance around current=40: 38 < raw < 42 keeps 40
        ("inside downscale tolerance", {}, 40, 38.5, 40),
        ("outside downscale tolerance", {}, 40, 37.5, 38),
        ("inside upscale tolerance", {}, 40, 41.5, 40),
        ("outside upscale tolerance", {}, 40, 42.5, 43),
        ("wider tolerance", {"upscale_tolerance": 0.5}, 4, 5.9, 4),
        # up-factor cap, but +1 is always allowed
        ("up cap allows +1", {}, 1, 10.0, 2),
        ("up cap 1.5", {}, 4, 20.0, 6),
        ("up cap 1.5 of 10", {}, 10, 100.0, 15),
        ("up cap 3", {"max_upscale_factor": 3.0}, 2, 100.0, 6),
        # down-factor cap, but -1 is always allowed
        ("down cap 0.75", {}, 10, 1.0, 8),
        ("down cap allows -1", {}, 2, 0.0, 1),
        ("down cap float noise", {"max_downscale_factor": 0.7}, 10, 0.0, 7),
        ("never below 1", {}, 1, 0.0, 1),
        ("min_replicas", {"min_replicas": 2}, 2, 0.0, 2),
        ("max_replicas", {"max_replicas": 5}, 4, 6.0, 5),
        ("max_replicas lowers", {"max_replicas": 3}, 4, 4.0, 3),
    ],
)
def test_recommendation_rules(case, overrides, current, avg, expected):
    d, _ = tick(spec(**NO_STAB, **overrides), current, avg)
    assert d.recommendation == expected, d.reason
    assert d.request == expected, d.reason


def test_decision_explains_itself_in_words():
    s = spec(target_replica_concurrency=2.0, upscale_stabilization_period=60.0,
             downscale_stabilization_period=0.0)
    earlier = AutoscalerState(((970.0, 2),))
    d, _ = decide(s, steady(7.2, 1000.0), earlier, current=2, start=0.0, now=1000.0)
    assert (d.avg_in_flight, d.raw, d.recommendation, d.request) == (pytest.approx(7.2),
                                                                       pytest.approx(3.6), 3, 2)
    assert d.reason == (
        "avg in-flight 7.2 / target 2 = 3.6 -> 4; up-factor cap 1.5 -> 3; "
        "upscale held by stabilization (min of last 60s = 2); keep 2"
    )
    assert not d.changed


def test_no_upscale_during_first_upscale_period_after_start():
    sim = Sim(spec(downscale_stabilization_period=0.0, window=10.0), current=1)
    sim.run(140, in_flight=10.0)
    # ticks at 10..50 are inside the 60 s after deploy; at 60 the lowest recent
    # recommendation is 2 (capped at +1 from 1); the recommendation 3 made from 2
    # replicas must then itself last the 60 s before it is requested
    reqs = sim.replicas_at()
    assert reqs[:7] == [(10, 1), (20, 1), (30, 1), (40, 1), (50, 1), (60, 2), (70, 2)]
    assert reqs[11:13] == [(120, 2), (130, 3)]
    assert "upscale held: less than 60s since deploy" in sim.decisions[0].reason


def test_start_is_the_deploy_time_not_the_first_tick():
    s = spec(downscale_stabilization_period=0.0, window=10.0)
    d, _ = decide(s, steady(10.0, 500.0, 10), AutoscalerState(), 1, start=400.0, now=500.0)
    assert d.request == 2
    d, _ = decide(s, steady(10.0, 500.0, 10), AutoscalerState(), 1, start=450.0, now=500.0)
    assert d.request == 1


def test_upscale_limited_by_lowest_recommendation_in_upscale_period():
    sim = Sim(spec(downscale_stabilization_period=0.0, window=10.0), current=2, start=-1000)
    sim.run(30, in_flight=2.0)
    sim.run(80, in_flight=3.0)
    # load rose at 30 s; the recommendation 3 must hold for 60 s before it is requested
    reqs = dict(sim.replicas_at())
    assert reqs[40] == 2 and reqs[90] == 2
    assert "upscale held by stabilization (min of last 60s = 2)" in sim.decisions[3].reason
    assert reqs[100] == 3


def test_downscale_held_by_highest_recommendation_in_downscale_period():
    s = spec(upscale_stabilization_period=0.0, downscale_stabilization_period=60.0, window=10.0)
    sim = Sim(s, current=8, start=-1000)
    sim.run(30, in_flight=8.0)
    sim.run(150, in_flight=1.0)
    reqs = dict(sim.replicas_at())
    # load fell at 30 s; the 8 recorded at 30 s holds the count until 90 s
    assert [reqs[t] for t in (30, 40, 90, 100)] == [8, 8, 8, 6]
    assert "downscale held by stabilization (max of last 60s = 8)" in sim.decisions[3].reason
    # the next step (6 -> 5, the 0.75 cap) waits until the 6s recommended from 8
    # replicas (40..100 s) have left the period
    assert [reqs[t] for t in (110, 160, 170)] == [6, 6, 5]


def test_no_downscale_during_first_downscale_period_after_start():
    s = spec(upscale_stabilization_period=0.0, downscale_stabilization_period=300.0, window=10.0)
    sim = Sim(s, current=4)
    sim.run(310, in_flight=0.0)
    reqs = dict(sim.replicas_at())
    assert all(reqs[t] == 4 for t in range(10, 300, 10))
    assert reqs[300] == 3
    assert "downscale held: less than 300s since deploy" in sim.decisions[0].reason


def test_downscale_waits_even_after_the_upscale_period_passed():
    # the defaults (down 300 s, up 60 s): between 60 s and 300 s after deploy a
    # scale-down must still be held; the upscale rule must not release it
    sim = Sim(spec(window=10.0), current=4)
    sim.run(290, in_flight=0.0)
    assert {d.request for d in sim.decisions} == {4}


def test_window_ignores_samples_older_than_the_window():
    s = spec(**NO_STAB, window=10.0)
    now = 1000.0
    old = [Sample(now - i, 100.0) for i in range(10, 40)]  # at now-10 and before: outside
    recent = [Sample(now - i, 2.0) for i in range(10)]
    d, _ = decide(s, old + recent, AutoscalerState(), current=2, start=0.0, now=now)
    assert d.avg_in_flight == pytest.approx(2.0)
    assert d.request == 2


def test_window_averages_uneven_load():
    s = spec(**NO_STAB, window=20.0)
    now = 1000.0
    samples = [Sample(now - i, 6.0 if i < 10 else 0.0) for i in range(20)]
    d, _ = decide(s, samples, AutoscalerState(), current=3, start=0.0, now=now)
    assert d.avg_in_flight == pytest.approx(3.0)
    assert d.request == 3


def test_no_samples_skips_the_tick():
    state = AutoscalerState(((990.0, 3),))
    d, after = decide(spec(), [Sample(100.0, 50.0)], state, current=3, start=0.0, now=1000.0)
    assert d.request == 3 and d.avg_in_flight is None
    assert d.reason == "no in-flight samples in the last 60s yet; keeping 3"
    assert after == state


def test_history_is_pruned_to_the_longest_period():
    s = spec(window=10.0, downscale_stabilization_period=120.0, upscale_stabilization_period=30.0)
    sim = Sim(s, current=1)
    for load in (0.0, 9.0, 3.0, 0.0) * 5:
        sim.run(250, in_flight=load)
    recs = sim.state.recommendations
    assert len(recs) == 13  # ticks at now-120 .. now
    assert sim.now - recs[0][0] == 120 and recs[-1][0] == sim.now
    assert len(sim.decisions) == 500


def test_load_step_scales_out_and_back_in_with_cortex_defaults():
    sim = Sim(spec(), current=1, start=0)
    sim.run(400, in_flight=0.0)
    sim.run(600, in_flight=12.0)
    assert sim.current == 12
    # each downscale step waits out the 300 s stabilization: 12 9 7 6 5 4 3 2 1
    sim.run(2400, in_flight=0.0)
    assert sim.current == 2
    sim.run(600, in_flight=0.0)
    assert sim.current == 1
    counts = [d.request for d in sim.decisions]
    # every change obeys the factor caps (+50%/+1 up, -25%/-1 down)
    for before, after in itertools.pairwise(counts):
        assert after <= max(before + 1, -(-before * 3 // 2))
        assert after >= min(before - 1, -(-before * 3 // 4))


def test_cpu_rule_follows_hpa():
    s = spec(target_cpu_utilization=50, **NO_STAB)
    cases = [
        (4, 80.0, 7),  # 4 * 1.6 = 6.4 -> 7
        (4, 54.0, 4),  # ratio 1.08: inside the 10% tolerance
        (4, 45.0, 4),  # ratio 0.9: on the tolerance edge, no change
        (4, 35.0, 3),  # 4 * 0.7 = 2.8 -> 3
        (4, 0.0, 1),   # never below 1
        (10, 500.0, 100),  # no factor caps in HPA; max_replicas clamps
        (2, 1000.0, 40),
    ]
    for current, util, expected in cases:
        samples = [CpuSample(1000.0 - i, util) for i in range(60)]
        d, _ = cpu_decide(s, samples, AutoscalerState(), current, start=0.0, now=1000.0)
        assert d.request == expected, (current, util, d.reason)
        assert d.avg_cpu_utilization == pytest.approx(util)


def test_cpu_rule_clamps_and_stabilizes():
    s = spec(target_cpu_utilization=50, min_replicas=2, max_replicas=6,
             downscale_stabilization_period=300.0, upscale_stabilization_period=0.0)
    samples = [CpuSample(1000.0 - i, 10.0) for i in range(60)]
    d, _ = cpu_decide(s, samples, AutoscalerState(((900.0, 5),)), 5, start=0.0, now=1000.0)
    assert d.recommendation == 2
    assert d.request == 5 and "downscale held by stabilization (max of last 300s = 5)" in d.reason
    samples = [CpuSample(1000.0 - i, 200.0) for i in range(60)]
    d, _ = cpu_decide(s, samples, AutoscalerState(), 5, start=0.0, now=1000.0)
    assert d.request == 6 and "max_replicas 6" in d.reason


def test_cpu_rule_needs_a_target():
    with pytest.raises(ValueError, match="target_cpu_utilization"):
        cpu_decide(spec(), [], AutoscalerState(), 1, start=0.0, now=0.0)


def test_samples_to_keep_covers_the_window():
    assert samples_to_keep(spec(window=60.0)) == 61
    assert samples_to_keep(spec(window=10.0), sample_interval=0.5) == 21
