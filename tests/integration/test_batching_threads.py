"""Server-side batching on real threads and the real clock: inputs from many threads run as batches,
each caller gets its own result, a partial batch waits for its interval.

The numpy stack/split helpers: tests/unit/test_batching.py."""

from __future__ import annotations

import threading
import time

import pytest

from predictor_runtime.batching import Batcher, BatcherSet, BatchFailed

pytestmark = pytest.mark.timeout(30)


def call_concurrently(batcher: Batcher, items: list) -> list:
    results: list = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = batcher.submit(items[i])
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_inputs_run_as_batches_and_each_caller_gets_its_own_result():
    seen: list[list[int]] = []

    def run(items):
        seen.append(list(items))
        return [x * 10 for x in items]

    b = Batcher(run, max_batch_size=4, batch_interval=0.5)
    results = call_concurrently(b, list(range(8)))
    assert results == [x * 10 for x in range(8)]
    assert all(len(batch) <= 4 for batch in seen)
    assert max(len(batch) for batch in seen) > 1
    assert sorted(x for batch in seen for x in batch) == list(range(8))
    stats = b.stats()
    assert stats["requests"] == 8 and stats["largest_batch"] > 1
    b.close()


def test_a_full_batch_runs_without_waiting_for_the_interval():
    b = Batcher(lambda items: items, max_batch_size=3, batch_interval=30.0)
    started = time.monotonic()
    assert call_concurrently(b, [1, 2, 3]) == [1, 2, 3]
    assert time.monotonic() - started < 20  # not the 30 s interval; generous for a loaded machine
    b.close()


def test_a_partial_batch_flushes_at_the_interval():
    b = Batcher(lambda items: items, max_batch_size=8, batch_interval=0.2)
    started = time.monotonic()
    assert b.submit("alone") == "alone"
    waited = time.monotonic() - started
    # it waited for the interval, then ran alone (never flushing would hang: the upper bound is
    # only against a much longer wait, generous for a loaded machine)
    assert 0.15 <= waited < 15
    b.close()


def test_a_failed_batch_fails_every_member():
    def run(items):
        raise RuntimeError("model exploded")

    b = Batcher(run, max_batch_size=4, batch_interval=0.3)
    results = call_concurrently(b, [1, 2, 3, 4])
    assert all(isinstance(r, BatchFailed) for r in results)
    assert "model exploded" in str(results[0])
    # the batcher keeps serving after a failure
    b2 = BatcherSet(2, 0.01).get(("m", 1), lambda items: items)
    assert b2.submit(5) == 5
    b.close()


def test_a_wrong_number_of_results_fails_the_batch():
    b = Batcher(lambda items: items[:1], max_batch_size=2, batch_interval=0.3)
    results = call_concurrently(b, [1, 2])
    assert all(isinstance(r, BatchFailed) for r in results)
    b.close()


def test_batcher_set_stats_add_up():
    s = BatcherSet(4, 0.01)
    s.get(("a", 1), lambda items: items).submit(1)
    s.get(("b", 1), lambda items: items).submit(2)
    stats = s.stats()
    assert stats["batches"] == 2 and stats["requests"] == 2 and stats["batch_sizes"] == {"1": 2}
