"""The previous run's replica logs (cortexd/logfiles.py keep_previous_logs / previous_logs): one run
back is kept at a daemon's start, for `cortexd logs API --previous`.

End to end (a crash, `down`, `up`, `logs --previous`): tests/integration/test_previous_logs.py.
"""

from __future__ import annotations

import os

from cortexd.logfiles import keep_previous_logs, previous_logs


def _log(folder, api, name, text, mtime=None):
    path = folder / api / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_the_previous_run_replaces_the_one_before_it(tmp_path):
    logs, previous = tmp_path / "logs", tmp_path / "logs.previous"
    _log(previous, "api", "api-old.log", "two runs ago\n")
    _log(logs, "api", "api-a.log", "Traceback ...\n", mtime=100)
    _log(logs, "api", "api-a.log.1", "older part\n")
    _log(logs, "api", "api-b.log", "second\n", mtime=200)
    assert keep_previous_logs(logs, previous)
    assert not logs.exists()  # this run's replicas start a fresh folder
    assert previous_logs(previous, "api") == [("api-a", str(previous / "api" / "api-a.log")),
                                              ("api-b", str(previous / "api" / "api-b.log"))]
    assert (previous / "api" / "api-a.log.1").read_text() == "older part\n"  # rotated parts too
    assert not (previous / "api" / "api-old.log").exists()  # one run back, no more


def test_a_run_that_wrote_no_replica_log_leaves_the_previous_one(tmp_path):
    logs, previous = tmp_path / "logs", tmp_path / "logs.previous"
    _log(previous, "api", "api-a.log", "the traceback\n")
    assert not keep_previous_logs(logs, previous)  # no logs folder at all
    (logs / "api").mkdir(parents=True)
    assert not keep_previous_logs(logs, previous)  # a start that failed before any replica wrote
    assert previous_logs(previous, "api") == [("api-a", str(previous / "api" / "api-a.log"))]


def test_previous_logs_only_of_folders_that_are_there(tmp_path):
    previous = tmp_path / "logs.previous"
    _log(previous, "api", "api-a.log", "x\n")
    _log(tmp_path, "secret", "s.log", "not a log of the previous run\n")
    assert previous_logs(previous, "nosuch") == []
    assert previous_logs(previous, "../secret") == []  # a name is never made into a path
    assert previous_logs(previous, "..") == []
    assert previous_logs(tmp_path / "missing", "api") == []
