"""The jobs' durable record (daemon/job_store.py, SQLite in WAL mode) as a state machine over a fake
clock: claims, outcomes counted once per attempt, retries, a worker or the daemon lost mid-batch."""

from __future__ import annotations

import sqlite3

import pytest

from cortexd.core.batch_jobs import BatchCounts, JobStatus
from cortexd.daemon.job_store import JobRow, JobStore


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "jobs.sqlite")


def new_job(store: JobStore, batches: int = 3, max_attempts: int = 2, job_id: str = "j1") -> None:
    store.create(JobRow(job_id, "api", 2, {"k": 1}, "item_list", 100.0, None, JobStatus.RUNNING, max_attempts),
                 [f"[{i}]" for i in range(batches)])


def test_batches_are_claimed_in_order_and_counted_once(path):
    store = JobStore(path)
    new_job(store)
    a, b = store.claim("j1", "w1", 101.0), store.claim("j1", "w2", 101.5)
    assert (a.index, a.attempt, a.payload, b.index) == (0, 1, "[0]", 1)
    assert store.finish("j1", 0, 1, error=None, seconds=0.5)
    assert not store.finish("j1", 0, 1, error=None, seconds=0.5)  # twice: the second is not counted
    assert store.counts("j1") == BatchCounts(queued=1, running=1, succeeded=1)
    assert store.average_seconds("j1") == 0.5
    assert store.job("j1").config == {"k": 1} and [j.job_id for j in store.jobs("api")] == ["j1"]


def test_a_failing_batch_is_retried_then_recorded_failed(path):
    store = JobStore(path)
    new_job(store, batches=1, max_attempts=2)
    first = store.claim("j1", "w1", 101.0)
    assert store.finish("j1", first.index, first.attempt, error="boom", seconds=0.1)
    second = store.claim("j1", "w1", 102.0)
    assert second.attempt == 2
    assert store.finish("j1", 0, 2, error="boom again", seconds=0.1)
    assert store.claim("j1", "w1", 103.0) is None
    assert store.counts("j1") == BatchCounts(failed=1) and store.errors("j1") == [(0, "boom again")]


def test_a_lost_worker_s_batch_runs_again_and_its_late_outcome_is_not_counted(path):
    store = JobStore(path)
    new_job(store, batches=2)
    lost = store.claim("j1", "w1", 101.0)
    assert store.requeue_lost("j1", "w1", "worker w1 exited with code -9") == 1
    again = store.claim("j1", "w2", 105.0)
    assert (again.index, again.attempt) == (lost.index, 2)
    assert not store.finish("j1", lost.index, lost.attempt, error=None, seconds=1.0)  # the lost one, late
    assert store.finish("j1", again.index, again.attempt, error=None, seconds=1.0)
    assert store.counts("j1") == BatchCounts(queued=1, succeeded=1)


def test_a_daemon_killed_mid_job_finds_every_batch_in_one_state(path):
    store = JobStore(path)
    new_job(store, batches=3)
    store.finish("j1", 0, store.claim("j1", "w1", 101.0).attempt, error=None, seconds=0.2)
    store.claim("j1", "w2", 101.0)  # in flight when the daemon dies
    del store  # no close: as a SIGKILL leaves it
    reopened = JobStore(path)
    assert reopened.counts("j1") == BatchCounts(queued=1, running=1, succeeded=1)
    assert reopened.requeue_running("the daemon restarted") == 1
    assert reopened.counts("j1") == BatchCounts(queued=2, succeeded=1)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_an_ended_job_hands_out_nothing_and_ends_once(path):
    store = JobStore(path)
    new_job(store)
    running = store.claim("j1", "w1", 105.0)
    assert store.end("j1", JobStatus.STOPPED, 110.0)
    assert store.counts("j1") == BatchCounts(queued=3)  # the one running is not counted, nor run
    assert not store.finish("j1", running.index, running.attempt, error=None, seconds=1.0)
    assert not store.end("j1", JobStatus.SUCCEEDED, 111.0)
    assert store.claim("j1", "w1", 112.0) is None
    job = store.job("j1")
    assert (job.status, job.ended) == (JobStatus.STOPPED, 110.0)
    assert store.take_completion_hook("j1") and not store.take_completion_hook("j1")
