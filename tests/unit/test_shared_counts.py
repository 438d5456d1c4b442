"""Gateway workers' shared in-flight table (gateway/shared_counts.py) and the daemon-side sums of
their metrics (APIMetrics.add, Monitor.add, workers._fold): pure logic, one process."""

from __future__ import annotations

import pytest

from cortexd.core.routing import pick_replica
from cortexd.gateway.metrics import APIMetrics, Monitor
from cortexd.gateway.routes import APIRoute, ReplicaAddress, ReplicaTarget
from cortexd.gateway.shared_counts import CountTable, Slots, WorkerCounts
from cortexd.gateway.workers import _fold


@pytest.fixture
def table():
    t = CountTable(8, 3)
    yield t
    t.close()


def test_each_worker_writes_its_own_cell_and_load_is_the_rows_sum(table):
    slots = Slots(8)
    key = ("replica", "a", "r1")
    slots.slot(key)
    workers = [WorkerCounts(table, i, slots.of) for i in range(3)]
    targets = [w.new_target("a", ReplicaAddress("r1", "127.0.0.1", 9000), pool=None) for w in workers]
    targets[0].in_flight += 1
    targets[1].in_flight += 2
    targets[2].in_flight += 1
    targets[2].in_flight -= 1
    assert [t.in_flight for t in targets] == [1, 2, 0]  # each its own (its pool, its draining)
    assert [t.load for t in targets] == [3, 3, 3]  # what routing and admission compare
    assert table.row_sum(slots.of[key]) == 3
    # admission reads the row: a replica at max_replica_concurrency 3 takes nothing more, from any worker
    assert pick_replica([targets[2].load], 3, 0) is None

    table.clear_column(1)  # worker 1 ended: its requests with it
    assert targets[0].load == 1


def test_a_plain_target_loads_its_own_count():
    target = ReplicaTarget("r1", "127.0.0.1", 9000)
    target.in_flight = 4
    assert target.load == 4


def test_api_wide_counts_are_published_per_worker(table):
    slots = Slots(8)
    slots.slot(("api", "a"))
    routes = [WorkerCounts(table, i, slots.of).new_route("a", "/a", 8888, 10) for i in range(3)]
    assert isinstance(routes[0], APIRoute)
    routes[0].in_flight += 2
    routes[2].in_flight += 1
    assert [r.in_flight for r in routes] == [2, 0, 1]
    assert table.row_sum(slots.of[("api", "a")]) == 3


def test_slots_are_reused_once_released_and_a_full_table_says_so():
    slots = Slots(2)
    a, b = slots.slot("a"), slots.slot("b")
    assert slots.slot("a") == a and a != b
    with pytest.raises(RuntimeError, match="count table is full"):
        slots.slot("c")
    slots.release("a")
    assert slots.slot("c") == a


def metrics(records: list[tuple[int, float, float]]) -> APIMetrics:
    m = APIMetrics()
    for status, seconds, now in records:
        m.record(status, seconds, now)
    return m


def test_metrics_add_up_codes_latencies_and_the_rolling_windows():
    now = 1000.5
    one = metrics([(200, 0.001, now - 3), (200, 0.002, now - 2), (503, 0.0001, now)])
    two = metrics([(200, 0.001, now - 3), (404, 0.001, now - 70)])  # the last one out of every window
    total = APIMetrics()
    total.add(one)
    total.add(two)
    assert total.codes == {200: 3, 503: 1, 404: 1}
    assert sum(total.buckets) == 5
    assert total.sum_s == pytest.approx(one.sum_s + two.sum_s)
    assert total.requests_per_s(now) == pytest.approx(3 / 10)  # the 3 requests of the last 10 whole s
    assert sum(total.window_histogram(now)) == 4  # the last minute's


def test_an_older_second_in_a_slot_gives_way_to_a_newer_one():
    now = 1000.5
    old = metrics([(200, 0.001, now - 60)])  # the same ring slot as `now`, a minute before
    new = metrics([(200, 0.001, now)])
    for first, second in [(old, new), (new, old)]:
        total = APIMetrics()
        total.add(first)
        total.add(second)
        assert sum(total.window_histogram(now)) == 1


def test_monitors_add_up_classes_and_values():
    a, b = Monitor("classification"), Monitor("classification")
    for body in [b'"cat"', b'"dog"', b'"cat"']:
        a.offer(body)
    b.offer(b'"cat"')
    b.offer(b"not json \xff")
    total = Monitor("classification")
    total.add(a)
    total.add(b)
    summary = total.summary()
    assert summary["predictions"] == 4 and summary["unreadable"] == 1
    assert summary["classes"] == [{"class": "cat", "count": 3}, {"class": "dog", "count": 1}]

    r1, r2 = Monitor("regression"), Monitor("regression")
    for v in (1, 2, 3):
        r1.offer(str(v).encode())
    r2.offer(b"10")
    both = Monitor("regression")
    both.add(r1)
    both.add(r2)
    summary = both.summary()
    assert (summary["min"], summary["max"], summary["avg"], summary["recent"]) == (1, 10, 4.0, 4)


def test_an_ended_workers_counts_are_kept_in_the_sums():
    now = 1000.5
    kept = ({}, {}, 0)
    report = ({"a": (metrics([(200, 0.001, now)]), None)},
              {"s": (2, {"a": (1, metrics([(200, 0.001, now)]))})}, 3)
    kept = _fold(kept, report)
    kept = _fold(kept, report)
    apis, splits, unrouted = kept
    assert apis["a"][0].codes == {200: 2} and apis["a"][1] is None
    refused, targets = splits["s"]
    assert refused == 4 and targets["a"][0] == 2 and targets["a"][1].codes == {200: 2}
    assert unrouted == 6
