"""A BatchAPI's jobs as users watch them (issue 18): which jobs are shown one by one, their tallies
from the job record, the live view's rows and progress bars, the /metrics series, and
`cortexd get BATCHAPI [JOB_ID]`. Rendered to fixed-width StringIO consoles, as test_ui_view does."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cortexd.core.batch_jobs import JobStatus, settled, shown_jobs
from cortexd.daemon.job_progress import ProgressBook
from cortexd.daemon.job_store import JobRow, JobStore
from cortexd.daemon.prometheus import MetricsCollector, build_registry, exposition
from cortexd.status import Status
from cortexd.ui.text import api_table, batch_detail, job_detail
from tests.unit.snapshots import BATCH, NOW, api, render, snapshot


def test_shown_jobs_are_those_running_then_a_few_recently_ended():
    jobs = [("r2", None), ("e1", NOW - 5), ("r1", None), ("old", NOW - 3600)]
    assert shown_jobs(jobs, NOW) == ["r2", "r1", "e1"]  # the one ended an hour ago is only counted
    many = [(f"e{i}", NOW - i) for i in range(10)] + [(f"r{i}", None) for i in range(30)]
    shown = shown_jobs(many, NOW)
    assert shown == [f"r{i}" for i in range(20)] + [f"e{i}" for i in range(5)]  # bounded: 20 running, 5 ended
    assert not settled(None, NOW) and not settled(NOW - 5, NOW) and settled(NOW - 601, NOW)


def _job(store: JobStore, job_id: str, batches: list[str], created: float = NOW - 60) -> None:
    store.create(JobRow(job_id, "sum", 2, {}, "item_list", created, None, JobStatus.RUNNING, 2), batches)


def _run(store: JobStore, job_id: str, n: int, error: str | None = None) -> None:
    for _ in range(n):
        claimed = store.claim(job_id, "w", NOW)
        assert claimed is not None
        store.finish(job_id, claimed.index, claimed.attempt, error=error, seconds=0.5)


def test_tallies_count_batches_by_state_and_the_items_that_succeeded(tmp_path):
    store = JobStore(str(tmp_path / "jobs.sqlite"))
    _job(store, "a", ["[1,2,3]", "[4,5,6]", "[7]"])
    _job(store, "b", ["[1]"])
    _run(store, "a", 2)
    store.claim("a", "w", NOW)
    tallies = store.tallies(["a", "b", "none"])
    assert tallies["a"].counts.succeeded == 2 and tallies["a"].counts.running == 1
    assert (tallies["a"].items_succeeded, tallies["a"].seconds_succeeded) == (6, 1.0)
    assert tallies["b"].counts.queued == 1 and "none" not in tallies


def test_a_record_without_item_counts_gets_them_once(tmp_path):
    path = str(tmp_path / "jobs.sqlite")
    store = JobStore(path)
    _job(store, "a", ["[1,2]", "[3]"])
    _run(store, "a", 2)
    store.close()
    db = sqlite3.connect(path)  # the record as a daemon before item counts wrote it
    db.execute("ALTER TABLE batches DROP COLUMN items")
    db.commit()
    db.close()
    assert JobStore(path).tallies(["a"])["a"].items_succeeded == 3


def test_the_progress_book_shows_running_and_recent_jobs_and_totals_all(tmp_path):
    store = JobStore(str(tmp_path / "jobs.sqlite"))
    _job(store, "old", ["[1]", "[2]"], created=NOW - 7200)
    _run(store, "old", 1)
    _run(store, "old", 2, error="boom")  # the second batch fails both its attempts
    store.end("old", JobStatus.COMPLETED_WITH_FAILURES, NOW - 3600)
    _job(store, "new", ["[1,2]", "[3,4]", "[5]"])
    _run(store, "new", 1)
    book = ProgressBook(store)
    b = book.status("sum", "http://127.0.0.1:8888/sum", {"new": 2}, NOW)
    assert (b.jobs, b.running, [j.job_id for j in b.job_list]) == (2, 1, ["new"])
    (new,) = b.job_list
    assert (new.succeeded, new.queued, new.total, new.items_succeeded, new.avg_batch_s) == (1, 2, 3, 2, 0.5)
    assert (new.workers, new.workers_running, new.elapsed(NOW)) == (2, 2, 60.0)
    assert b.jobs_by_status == {"status_completed_with_failures": 1, "status_running": 1}
    assert (b.batches_succeeded, b.batches_failed, b.items_succeeded, b.workers_running) == (2, 1, 3, 2)
    # the settled job's counts are read once and kept: a later snapshot reads only the new job's
    with sqlite3.connect(str(tmp_path / "jobs.sqlite")) as db:
        db.execute("DELETE FROM batches WHERE job_id = 'old'")
    assert book.status("sum", "u", {}, NOW).batches_failed == 1


@pytest.mark.parametrize("width", [80, 120])
def test_the_live_view_shows_a_batch_api_its_running_jobs_bars_and_an_ended_jobs_status(width):
    text = render({**snapshot([api("iris")]), "batch_apis": [BATCH]}, width)
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("sum ")).split() == ["sum", "2/4",
                                                                               "http://127.0.0.1:8888/sum"]
    running = next(line for line in lines if "3f2a9c0d1e2f3a4b" in line).split()
    assert running[0] == "3f2a9c0d1e2f3a4b" and "━" in running[1]  # the bar
    assert running[-6:] == ["48%", "48/100", "3", "2", "1m05s", "0.7"]  # done, failed, workers, elapsed, rate
    ended = next(line for line in lines if "9d01b7c2e4f6a8b0" in line).split()
    assert ended == ["9d01b7c2e4f6a8b0", "succeeded", "100/100", "0", "0", "1m00s", "1.7"]
    assert "and 1 more job(s) running (cortexd get sum)" in text  # 2 running, 1 shown
    for header in ("BATCH API", "JOBS RUNNING/SUBMITTED", "PROGRESS", "DONE", "FAILED", "WORKERS", "ELAPSED"):
        assert header in text
    assert "iris · http://127.0.0.1:8888/iris" in text  # the realtime APIs' view is unchanged


def test_a_batch_api_alone_is_not_no_apis_deployed_and_without_jobs_has_no_jobs_table():
    text = render({**snapshot([]), "batch_apis": [{"name": "sum", "url": "u", "jobs": 0, "running": 0}]}, 80)
    assert "no apis" not in text and "sum " in text and "PROGRESS" not in text  # no line for no RealtimeAPI


def test_metrics_have_per_job_series_for_the_jobs_shown_and_totals_per_batch_api():
    snap = Status.from_json({**snapshot([]), "batch_apis": [BATCH]})
    body, _ = exposition(build_registry(MetricsCollector(lambda: snap, lambda: [])))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    run = (("api", "sum"), ("job_id", "3f2a9c0d1e2f3a4b"))
    assert samples[("cortexd_batch_job_batches", (*run, ("state", "succeeded")))] == 45
    assert samples[("cortexd_batch_job_batches", (*run, ("state", "queued")))] == 50
    assert samples[("cortexd_batch_job_batches", (*run, ("state", "failed")))] == 3
    assert samples[("cortexd_batch_job_workers", run)] == 2
    assert samples[("cortexd_batch_job_items_succeeded_total", run)] == 450
    assert samples[("cortexd_batch_job_status", (*run, ("status", "status_running")))] == 1
    assert samples[("cortexd_batch_jobs", (("api", "sum"), ("status", "status_stopped")))] == 1
    assert samples[("cortexd_batch_batches_total", (("api", "sum"), ("outcome", "failed")))] == 3
    assert samples[("cortexd_batch_items_succeeded_total", (("api", "sum"),))] == 3450
    assert samples[("cortexd_batch_workers", (("api", "sum"),))] == 4
    assert len({labels for name, labels in samples if name == "cortexd_batch_job_workers"}) == 2  # the jobs shown


def test_get_batch_api_lists_jobs_with_progress_and_get_job_says_progress_and_pace():
    listing = batch_detail({"name": "sum", "port": 8888, "endpoint": "/sum", "jobs": [
        {"job_id": "j1", "status": "status_running", "succeeded": 45, "failed": 3, "total": 100, "workers": 2,
         "created_time": "2027-01-15T08:00:00Z"}]})
    row = next(line for line in listing.splitlines() if line.startswith("j1 ")).split()
    assert row == ["j1", "status_running", "48/100", "(48%)", "3", "2", "2027-01-15T08:00:00"]
    answer = {"job_status": {
        "job_id": "j1", "api_name": "sum", "status": "status_running", "workers": 2, "config": {},
        "created_time": "2027-01-15T08:00:00Z", "end_time": None, "batches_in_queue": 50,
        "batch_metrics": {"succeeded": 45, "failed": 3, "running": 2, "total": 100, "avg_time_per_batch": 0.5},
        "worker_counts": {"running": 2, "succeeded": 0, "failed": 0}}}
    started = datetime.fromisoformat("2027-01-15T08:00:00Z").timestamp()
    shown = job_detail(answer, started + 65)
    assert "progress:   48/100 (48%) batches done, 1m05s elapsed, 0.7 batches/s" in shown
    assert "batches:    45 succeeded, 3 failed, 2 running, 50 queued, of 100" in shown
    assert "avg time:   0.500 s per batch" in shown and "workers:    2 (2 running, 0 succeeded, 0 failed)" in shown


def test_get_with_only_batch_apis_shows_their_table_first_not_no_apis_deployed():
    table = api_table(Status.from_json({**snapshot([]), "batch_apis": [{"name": "sum", "url": "u", "jobs": 2,
                                                                         "running": 1}]}))
    assert table.splitlines()[0].split() == ["BATCH", "API", "JOBS", "RUNNING", "URL"]
    assert "no apis deployed" not in table
