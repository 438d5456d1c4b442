"""core.rollout: scaling and rolling plans under Kubernetes' surge/unavailable rules."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from cortexd.core.rollout import ObservedReplica, plan, resolve_update_strategy

OLD, NEW = "oldhash", "newhash"


def rep(rid: str, spec_hash: str = NEW, ready: bool = True, started: float | None = None,
        draining: bool = False) -> ObservedReplica:
    started_at = float(rid.rsplit("-", 1)[1]) if started is None else started
    return ObservedReplica(rid, spec_hash, ready, draining, started_at)


def olds(n: int) -> list[ObservedReplica]:
    return [rep(f"old-{i}", OLD) for i in range(n)]


def news(n: int, ready: bool = True, first: int = 100) -> list[ObservedReplica]:
    return [rep(f"new-{first + i}", NEW, ready) for i in range(n)]


@pytest.mark.parametrize(
    "surge, unavailable, desired, expected",
    [
        ("25%", "25%", 4, (1, 1)),
        ("25%", "25%", 3, (1, 0)),  # surge rounds up, unavailable down
        ("25%", "25%", 10, (3, 2)),
        ("10%", "10%", 3, (1, 0)),
        ("10%", "10%", 10, (1, 1)),
        (1, 0, 4, (1, 0)),
        (0, 1, 4, (0, 1)),
        (0, 0, 4, (0, 1)),  # both 0 cannot progress: Kubernetes makes unavailable 1
        ("0%", "0%", 4, (0, 1)),
        ("25%", "25%", 0, (0, 1)),
        ("100%", "0%", 3, (3, 0)),
        ("2", "1", 5, (2, 1)),
    ],
)
def test_update_strategy_resolves_like_kubernetes(surge, unavailable, desired, expected):
    assert resolve_update_strategy(surge, unavailable, desired) == expected


@pytest.mark.parametrize("bad", ["a lot", "25", "-1", -1, "12.5%", "101%", True])
def test_bad_update_strategy_is_explained(bad):
    if bad == "25":  # a digit string is a plain count, not an error
        assert resolve_update_strategy(bad, 0, 4) == (25, 0)
        return
    with pytest.raises(ValueError, match=r"update_strategy\.max_surge: expected a"):
        resolve_update_strategy(bad, 0, 4)


@pytest.mark.parametrize(
    "case, desired, observed, surge, unavailable, start, drain",
    [
        # rolling updates from 4 ready old replicas
        ("25%/25% of 4", 4, olds(4), "25%", "25%", 2, ("old-0",)),
        ("1/0: surge only", 4, olds(4), 1, 0, 1, ()),
        ("1/0: one new ready", 4, olds(4) + news(1), 1, 0, 1, ("old-0",)),
        ("1/0: new not ready yet", 4, olds(4) + news(1, ready=False), 1, 0, 0, ()),
        ("0/1: drain first", 4, olds(4), 0, 1, 1, ("old-0",)),
        ("0/1: waiting", 4, olds(3) + news(1, ready=False), 0, 1, 0, ()),
        ("0/0 acts as 0/1", 4, olds(4), 0, 0, 1, ("old-0",)),
        ("25%/25% of 3 is 1/0", 3, olds(3), "25%", "25%", 1, ()),
        ("25%/25% of 10 is 3/2", 10, olds(10), "25%", "25%", 5, ("old-0", "old-1")),
        ("old not ready goes at once", 4, olds(2) + [rep("old-7", OLD, ready=False)] + news(1),
         "25%", "25%", 2, ("old-7",)),
        # plain scaling
        ("steady", 4, news(4), "25%", "25%", 0, ()),
        ("scale up", 4, news(2), "25%", "25%", 2, ()),
        ("scale up beyond surge", 10, news(2), 0, 1, 8, ()),
        ("scale down drains newest", 2, news(4), "25%", "25%", 0, ("new-103", "new-102")),
        ("scale down drains not ready first", 2,
         [rep("new-1"), rep("new-2", ready=False), rep("new-3"), rep("new-4")],
         "25%", "25%", 0, ("new-2", "new-4")),
        ("to zero", 0, olds(1) + news(2), "25%", "25%", 0, ("new-101", "new-100", "old-0")),
        # a crashed replica is gone (the reconciler stopped it): its replacement is a missing one
        ("crashed one replaced", 3, news(2), "25%", "25%", 1, ()),
        ("draining ones are ignored", 2, news(2) + [rep("old-1", OLD, draining=True)],
         "25%", "25%", 0, ()),
    ],
)
def test_plans(case, desired, observed, surge, unavailable, start, drain):
    p = plan(NEW, desired, observed, surge, unavailable)
    assert (p.start, p.drain) == (start, drain), case


def test_plan_is_deterministic_whatever_the_order():
    observed = olds(5) + news(3, ready=False) + news(2, first=200)
    plans = {plan(NEW, 6, list(order), "25%", "25%")
             for order in itertools.islice(itertools.permutations(observed), 0, 5000, 97)}
    assert len(plans) == 1


def test_plan_carries_the_resolved_strategy():
    p = plan(NEW, 4, olds(4), "25%", "25%")
    assert (p.max_surge, p.max_unavailable) == (1, 1)


class Cluster:
    """Applies plans the way the reconciler does; draining replicas finish one step later."""

    def __init__(self, replicas: list[ObservedReplica]) -> None:
        self.replicas = list(replicas)
        self.clock = 1000

    def active(self) -> list[ObservedReplica]:
        return [r for r in self.replicas if not r.draining]

    def ready(self) -> int:
        return sum(r.ready for r in self.active())

    def converged(self, p, desired: int) -> bool:
        """Nothing left to do: exactly `desired` ready replicas of the new spec."""
        active = self.active()
        return (p.start == 0 and not p.drain and len(active) == desired
                and all(r.spec_hash == NEW and r.ready for r in active))

    def apply(self, p) -> None:
        self.replicas = [r for r in self.replicas if not r.draining]  # drains from last step done
        self.replicas = [replace(r, draining=True) if r.replica_id in p.drain else r
                         for r in self.replicas]
        for _ in range(p.start):
            self.clock += 1
            self.replicas.append(rep(f"new-{self.clock}", NEW, ready=False))

    def make_ready(self, how_many: int | None) -> None:
        waiting = [r for r in self.replicas if not r.ready and not r.draining
                   and r.spec_hash == NEW][:how_many]
        ids = {r.replica_id for r in waiting}
        self.replicas = [replace(r, ready=True) if r.replica_id in ids else r
                         for r in self.replicas]


def roll(cluster: Cluster, desired, surge, unavailable, ready_per_step, steps=200,
         resize_at: dict[int, int] | None = None):
    """Plan, apply, let replicas become ready, repeat; check the invariants at each step."""
    for step in range(steps):
        desired = (resize_at or {}).get(step, desired)
        max_surge, max_unavailable = resolve_update_strategy(surge, unavailable, desired)
        total_before, ready_before = len(cluster.active()), cluster.ready()
        p = plan(NEW, desired, cluster.replicas, surge, unavailable)
        if cluster.converged(p, desired):
            return step, desired
        cluster.apply(p)
        total, ready = len(cluster.active()), cluster.ready()
        # never start above desired + surge; never drain below desired - unavailable
        assert p.start == 0 or total <= desired + max_surge, (step, p)
        assert total <= max(total_before, desired + max_surge), (step, p)
        assert ready >= min(ready_before, desired - max_unavailable), (step, p)
        cluster.make_ready(ready_per_step)
    raise AssertionError(f"no convergence after {steps} steps: {p}")


STRATEGIES = [("25%", "25%"), (1, 0), (0, 1), (0, 0), ("50%", "0%"), (2, 2), ("100%", "0%"),
              ("0%", "100%"), ("10%", "10%")]


@pytest.mark.parametrize("surge, unavailable", STRATEGIES)
@pytest.mark.parametrize("desired", [1, 3, 4, 10])
@pytest.mark.parametrize("ready_per_step", [1, None])
def test_full_rollout_converges_within_bounds(surge, unavailable, desired, ready_per_step):
    cluster = Cluster(olds(desired))
    steps, _ = roll(cluster, desired, surge, unavailable, ready_per_step)
    final = cluster.active()
    assert steps >= 1
    assert len(final) == desired
    assert all(r.spec_hash == NEW and r.ready for r in final)


def test_strict_bounds_hold_at_every_step_of_a_default_rollout():
    cluster = Cluster(olds(4))
    seen = []
    for _ in range(50):
        p = plan(NEW, 4, cluster.replicas, "25%", "25%")
        if cluster.converged(p, 4):
            break
        cluster.apply(p)
        seen.append((len(cluster.active()), cluster.ready()))
        cluster.make_ready(1)
    assert seen and all(total <= 5 and ready >= 3 for total, ready in seen)
    assert sorted(r.spec_hash for r in cluster.active()) == [NEW] * 4


@pytest.mark.parametrize("surge, unavailable", STRATEGIES)
def test_scale_up_during_a_rollout(surge, unavailable):
    cluster = Cluster(olds(4))
    _, desired = roll(cluster, 4, surge, unavailable, ready_per_step=1, resize_at={2: 7})
    assert desired == 7
    assert len(cluster.active()) == 7
    assert all(r.spec_hash == NEW and r.ready for r in cluster.active())


@pytest.mark.parametrize("surge, unavailable", STRATEGIES)
def test_scale_down_during_a_rollout(surge, unavailable):
    cluster = Cluster(olds(10))
    _, desired = roll(cluster, 10, surge, unavailable, ready_per_step=1, resize_at={2: 3})
    assert desired == 3
    assert len(cluster.active()) == 3
    assert all(r.spec_hash == NEW and r.ready for r in cluster.active())


def test_new_version_that_never_gets_ready_stalls_and_old_keep_serving():
    cluster = Cluster(olds(4))
    for _ in range(10):
        cluster.apply(plan(NEW, 4, cluster.replicas, "25%", "25%"))
    p = plan(NEW, 4, cluster.replicas, "25%", "25%")
    assert (p.start, p.drain, cluster.converged(p, 4)) == (0, (), False)
    assert cluster.ready() == 3 and len(cluster.active()) == 5
    assert sum(r.spec_hash == OLD for r in cluster.active()) == 3


def test_crashed_replica_during_a_rollout_is_replaced():
    # new-11 crashed: the reconciler stopped it, so the plan sees it missing
    observed = olds(3) + [rep("new-10")]
    p = plan(NEW, 4, observed, "25%", "25%")
    # one old goes since 4 ready > 3 needed; room for 2 new (new-11's replacement among them)
    assert p.drain == ("old-0",)
    assert p.start == 2
