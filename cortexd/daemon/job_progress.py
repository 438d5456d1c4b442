"""The BatchAPIs' part of the status snapshot: each one's jobs counted by status, the jobs shown
one by one with their progress (core.batch_jobs.shown_jobs), and totals over every job it ran:
what the live view draws (ui/jobs_view.py) and /metrics exports (prometheus.py).

Read from the job record (job_store.py) at each snapshot, on the event loop: one query for a
BatchAPI's jobs and one grouped query for the batches of the jobs whose counts can still change.
A job that ended long ago (core.batch_jobs.settled) has final counts: they are read once and
kept here, so a snapshot costs the same after a thousand jobs as after one.
"""

from __future__ import annotations

from collections.abc import Mapping

from cortexd.core.batch_jobs import BatchCounts, settled, shown_jobs
from cortexd.daemon.job_store import JobRow, JobStore, JobTally
from cortexd.status import BatchAPIStatus, JobProgress

_NONE = JobTally(BatchCounts())


class ProgressBook:
    """Builds BatchAPIStatus values from the job record, keeping the tallies of settled jobs."""

    def __init__(self, store: JobStore):
        self._store = store
        self._settled: dict[str, JobTally] = {}

    def status(self, name: str, url: str, workers: Mapping[str, int], now: float) -> BatchAPIStatus:
        """BatchAPI `name`'s status; workers: job id -> its workers running now (this daemon's)."""
        jobs = self._store.jobs(name)
        fresh = [j.job_id for j in jobs if j.job_id not in self._settled]
        tallies = self._store.tallies(fresh) if fresh else {}
        for job in jobs:
            if job.job_id in tallies and settled(job.ended, now) and not tallies[job.job_id].counts.running:
                self._settled[job.job_id] = tallies[job.job_id]
        tallies.update((j.job_id, self._settled[j.job_id]) for j in jobs if j.job_id in self._settled)
        shown = set(shown_jobs([(j.job_id, j.ended) for j in jobs], now))
        by_status: dict[str, int] = {}
        for job in jobs:
            by_status[job.status.value] = by_status.get(job.status.value, 0) + 1
        every = [tallies.get(j.job_id, _NONE) for j in jobs]
        return BatchAPIStatus(
            name, url, len(jobs), sum(1 for j in jobs if j.ended is None),
            tuple(progress(j, tallies.get(j.job_id, _NONE), workers.get(j.job_id, 0))
                  for j in jobs if j.job_id in shown),
            dict(sorted(by_status.items())), sum(t.counts.succeeded for t in every),
            sum(t.counts.failed for t in every), sum(t.items_succeeded for t in every),
            sum(workers.get(j.job_id, 0) for j in jobs))


def progress(job: JobRow, tally: JobTally, workers_running: int) -> JobProgress:
    c = tally.counts
    return JobProgress(job.job_id, job.status.value, job.created, job.ended, job.workers, workers_running,
                       c.queued, c.running, c.succeeded, c.failed, tally.items_succeeded,
                       tally.seconds_succeeded / c.succeeded if c.succeeded else None)
