"""The BatchAPI jobs' durable record: SQLite under CORTEXD_HOME (WAL), one row per job and per batch.

A batch goes queued -> running (claimed by a worker, with its attempt number) -> succeeded or
failed; an outcome counts only for the attempt that is running (`finish`), so a batch is never
completed twice, even when a worker presumed lost answers late. What was running when a worker
or the daemon died is queued again (`requeue_lost`, `requeue_running`), or recorded failed once
it has had its attempts (core.batch_jobs.after_attempt). Every change is one transaction, so a
daemon killed at any point finds each batch in one state after `up`. The daemon calls these off
its event loop or briefly on it (each call is one small indexed statement).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cortexd.core.batch_jobs import BatchCounts, BatchState, JobStatus, after_attempt

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, api TEXT NOT NULL, workers INTEGER NOT NULL, config TEXT NOT NULL,
    source TEXT NOT NULL, created REAL NOT NULL, ended REAL, status TEXT NOT NULL,
    max_attempts INTEGER NOT NULL, completed_hook INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS batches (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, claimed REAL, seconds REAL, error TEXT,
    items INTEGER, PRIMARY KEY (job_id, idx));
CREATE INDEX IF NOT EXISTS batches_state ON batches (job_id, state, idx);
"""


@dataclass(frozen=True)
class JobRow:
    job_id: str
    api: str
    workers: int
    config: dict[str, Any]
    source: str
    created: float
    ended: float | None
    status: JobStatus
    max_attempts: int


@dataclass(frozen=True)
class JobTally:
    """A job's batches by state, the items of those that succeeded and their total seconds."""

    counts: BatchCounts
    items_succeeded: int = 0
    seconds_succeeded: float = 0.0


@dataclass(frozen=True)
class Claimed:
    """A batch handed to a worker: its index, attempt number and JSON payload."""

    index: int
    attempt: int
    payload: str


class JobStore:
    def __init__(self, path: str):
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # one connection, shared by the loop and its executor
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_items_column()

    def close(self) -> None:
        self._db.close()

    def _add_items_column(self) -> None:
        """A record written before batches counted their items gets the column, filled once."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(batches)")}
        if "items" in columns:
            return
        with self._tx() as db:
            db.execute("ALTER TABLE batches ADD COLUMN items INTEGER")
            rows = db.execute("SELECT job_id, idx, payload FROM batches").fetchall()
            db.executemany("UPDATE batches SET items = ? WHERE job_id = ? AND idx = ?",
                           [(_item_count(payload), job_id, idx) for job_id, idx, payload in rows])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- jobs -----------------------------------------------------------------------------

    def create(self, job: JobRow, batches: Sequence[str]) -> None:
        """A new job and all its batches, queued, in one transaction."""
        with self._tx() as db:
            db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                       (job.job_id, job.api, job.workers, json.dumps(job.config), job.source, job.created,
                        job.ended, job.status.value, job.max_attempts))
            db.executemany("INSERT INTO batches (job_id, idx, payload, state, items) VALUES (?, ?, ?, ?, ?)",
                           [(job.job_id, i, b, BatchState.QUEUED.value, _item_count(b))
                            for i, b in enumerate(batches)])

    def job(self, job_id: str) -> JobRow | None:
        with self._lock:
            row = self._db.execute("SELECT job_id, api, workers, config, source, created, ended, status, "
                                   "max_attempts FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _job_row(row)

    def jobs(self, api: str | None = None) -> list[JobRow]:
        """The jobs of `api` (all when None), newest first."""
        query = ("SELECT job_id, api, workers, config, source, created, ended, status, max_attempts FROM jobs"
                 + (" WHERE api = ?" if api is not None else "") + " ORDER BY created DESC")
        with self._lock:
            rows = self._db.execute(query, (api,) if api is not None else ()).fetchall()
        return [_job_row(r) for r in rows]

    def end(self, job_id: str, status: JobStatus, now: float) -> bool:
        """Record the job ended with `status` (False: it had ended already). A stopped job's
        batches that had not run stay queued, never claimed again; those running go back to
        queued (their workers are stopped: whatever they say now is not counted)."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET status = ?, ended = ? WHERE job_id = ? AND ended IS NULL",
                             (status.value, now, job_id))
            if cur.rowcount == 1 and status is JobStatus.STOPPED:
                db.execute("UPDATE batches SET state = ?, worker = NULL WHERE job_id = ? AND state = ?",
                           (BatchState.QUEUED.value, job_id, BatchState.RUNNING.value))
            return cur.rowcount == 1

    def take_completion_hook(self, job_id: str) -> bool:
        """True once per job: the worker told this runs on_job_complete."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET completed_hook = 1 WHERE job_id = ? AND completed_hook = 0",
                              (job_id,)).rowcount == 1

    # -- batches --------------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, now: float) -> Claimed | None:
        """The next queued batch of a running job, now running on `worker` (None: none queued)."""
        with self._tx() as db:
            row = db.execute("SELECT b.idx, b.attempts, b.payload FROM batches b JOIN jobs j USING (job_id) "
                             "WHERE b.job_id = ? AND b.state = ? AND j.ended IS NULL ORDER BY b.idx LIMIT 1",
                             (job_id, BatchState.QUEUED.value)).fetchone()
            if row is None:
                return None
            idx, attempts, payload = row
            db.execute("UPDATE batches SET state = ?, attempts = ?, worker = ?, claimed = ? "
                       "WHERE job_id = ? AND idx = ?",
                       (BatchState.RUNNING.value, attempts + 1, worker, now, job_id, idx))
            return Claimed(idx, attempts + 1, payload)

    def finish(self, job_id: str, index: int, attempt: int, *, error: str | None, seconds: float) -> bool:
        """The outcome of attempt `attempt` of a batch: succeeded, or (error) queued again or failed.
        False when that attempt is no longer the running one (its outcome is not counted)."""
        with self._tx() as db:
            row = db.execute("SELECT j.max_attempts FROM batches b JOIN jobs j USING (job_id) WHERE b.job_id = ? "
                             "AND b.idx = ? AND b.state = ? AND b.attempts = ?",
                             (job_id, index, BatchState.RUNNING.value, attempt)).fetchone()
            if row is None:
                return False
            state = BatchState.SUCCEEDED if error is None else after_attempt(attempt, row[0])
            db.execute("UPDATE batches SET state = ?, seconds = ?, error = ?, worker = NULL WHERE job_id = ? "
                       "AND idx = ?", (state.value, seconds, error, job_id, index))
            return True

    def requeue_lost(self, job_id: str, worker: str, reason: str) -> int:
        """A worker that died: its running batches are queued again, or failed after their attempts."""
        return self._requeue("b.job_id = ? AND b.worker = ?", (job_id, worker), reason)

    def requeue_running(self, reason: str) -> int:
        """After a daemon restart: every running batch of an unended job (its worker died with the daemon)."""
        return self._requeue("1 = 1", (), reason)

    def _requeue(self, where: str, args: tuple[Any, ...], reason: str) -> int:
        with self._tx() as db:
            rows = db.execute(f"SELECT b.job_id, b.idx, b.attempts, j.max_attempts FROM batches b JOIN jobs j "
                              f"USING (job_id) WHERE {where} AND b.state = ? AND j.ended IS NULL",
                              (*args, BatchState.RUNNING.value)).fetchall()
            for job_id, idx, attempts, max_attempts in rows:
                state = after_attempt(attempts, max_attempts)
                db.execute("UPDATE batches SET state = ?, worker = NULL, error = ? WHERE job_id = ? AND idx = ?",
                           (state.value, reason, job_id, idx))
            return len(rows)

    def counts(self, job_id: str) -> BatchCounts:
        with self._lock:
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM batches WHERE job_id = ? GROUP BY state",
                                         (job_id,)).fetchall())
        return BatchCounts(*(int(rows.get(s.value, 0)) for s in BatchState))

    def tallies(self, job_ids: Sequence[str]) -> dict[str, JobTally]:
        """Each job's JobTally (a job without batches: none), in one grouped query per 500 jobs."""
        found: dict[str, dict[str, tuple[int, int, float]]] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            with self._lock:
                rows = self._db.execute(
                    "SELECT job_id, state, COUNT(*), COALESCE(SUM(items), 0), COALESCE(SUM(seconds), 0) FROM batches "
                    f"WHERE job_id IN ({','.join('?' * len(chunk))}) GROUP BY job_id, state", chunk).fetchall()
            for job_id, state, n, items, seconds in rows:
                found.setdefault(job_id, {})[state] = (int(n), int(items), float(seconds))
        out = {}
        for job_id, states in found.items():
            counts = BatchCounts(*(states.get(s.value, (0, 0, 0.0))[0] for s in BatchState))
            _, items, seconds = states.get(BatchState.SUCCEEDED.value, (0, 0, 0.0))
            out[job_id] = JobTally(counts, items, seconds)
        return out

    def average_seconds(self, job_id: str) -> float | None:
        """Average time of the succeeded batches (None before any)."""
        with self._lock:
            (avg,) = self._db.execute("SELECT AVG(seconds) FROM batches WHERE job_id = ? AND state = ?",
                                      (job_id, BatchState.SUCCEEDED.value)).fetchone()
        return avg

    def errors(self, job_id: str, limit: int = 5) -> list[tuple[int, str]]:
        """(batch index, last error) of failed batches."""
        with self._lock:
            return self._db.execute("SELECT idx, error FROM batches WHERE job_id = ? AND state = ? ORDER BY idx "
                                    "LIMIT ?", (job_id, BatchState.FAILED.value, limit)).fetchall()


def _item_count(batch: str) -> int:
    """The items of a batch (a JSON list, as core.batch_jobs.batches_of writes it)."""
    items = json.loads(batch)
    return len(items) if isinstance(items, list) else 1


def _job_row(row: tuple[Any, ...]) -> JobRow:
    job_id, api, workers, config, source, created, ended, status, max_attempts = row
    return JobRow(job_id, api, workers, json.loads(config), source, created, ended, JobStatus(status), max_attempts)
