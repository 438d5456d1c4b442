"""core.routing.pick_replica: least in-flight, round-robin among ties, None when all are full."""

from __future__ import annotations

from collections import Counter

from cortexd.core.routing import pick_replica


def test_no_replicas():
    assert pick_replica([], 10, 0) is None


def test_single_replica_until_its_limit():
    assert pick_replica([0], 1, 7) == 0
    assert pick_replica([4], 5, 0) == 0
    assert pick_replica([5], 5, 0) is None
    assert pick_replica([6], 5, 0) is None  # over the limit (the limit was lowered) is full too


def test_least_in_flight_wins_regardless_of_start():
    for start in range(6):
        assert pick_replica([3, 1, 2], 10, start) == 1


def test_ties_rotate_with_start():
    assert [pick_replica([0, 0, 0], 10, s) for s in range(6)] == [0, 1, 2, 0, 1, 2]
    # among the least loaded only: replica 1 (load 2) is never chosen
    assert [pick_replica([1, 2, 1], 10, s) for s in range(3)] == [0, 2, 2]


def test_full_replicas_are_skipped():
    assert pick_replica([2, 2, 1], 2, 0) == 2
    assert pick_replica([2, 2, 2], 2, 1) is None


def test_start_may_exceed_the_count():
    assert pick_replica([0, 0], 10, 10**9 + 1) == 1


def test_round_robin_spreads_evenly_when_idle():
    picks = Counter(pick_replica([0, 0, 0, 0], 1, s) for s in range(400))
    assert picks == {0: 100, 1: 100, 2: 100, 3: 100}


def test_simulated_load_stays_balanced():
    # requests arrive and never finish: each pick adds one to the chosen replica
    loads = [0, 0, 0]
    for start in range(9):
        i = pick_replica(loads, 3, start)
        loads[i] += 1
    assert loads == [3, 3, 3]
    assert pick_replica(loads, 3, 9) is None
