"""logs --since: LogClock maps a time to the place in a (rotated) log written after it; the CLI parses WHEN."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from cortexd.cli import UsageError, _parse_since
from cortexd.daemon.logclock import LogClock
from cortexd.logfiles import HISTORY_CAP, START, RotatingLogWriter, log_files, read_since


def read_from(path, position):
    return read_since(path, position, HISTORY_CAP)[0]


def test_position_since_follows_the_sampled_sizes(tmp_path):
    now = [1000.0]
    log = tmp_path / "api" / "r1.log"
    log.parent.mkdir()
    log.write_text("old\n")
    clock = LogClock(tmp_path, clock=lambda: now[0])
    clock.sample()  # t=1000: 4 bytes
    now[0] = 1010.0
    with open(log, "a") as f:
        f.write("new 1\n")
    clock.sample()  # t=1010: 10 bytes
    now[0] = 1020.0
    with open(log, "a") as f:
        f.write("new 2\n")
    clock.sample()
    os.utime(log, (1020.0, 1020.0))
    path = str(log)
    assert read_from(path, clock.position_since(path, 999.0)) == ["old", "new 1", "new 2"]  # before any mark
    assert read_from(path, clock.position_since(path, 1005.0)) == ["new 1", "new 2"]
    assert read_from(path, clock.position_since(path, 1015.0)) == ["new 2"]
    assert clock.position_since(path, 1030.0).offset == log.stat().st_size  # nothing written since
    assert read_from(path, clock.position_since(path, 1030.0)) == []
    log.unlink()
    clock.sample()
    assert clock.position_since(path, 1005.0) == START


def test_a_sample_in_the_middle_of_a_rotation_keeps_the_logs_marks(tmp_path):
    # a rotation renames r1.log to r1.log.1 and then makes the next r1.log: a sample between the
    # two sees no r1.log, and must not forget its marks (--since would read from the oldest file)
    now = [1000.0]
    log = tmp_path / "api" / "r1.log"
    log.parent.mkdir()
    log.write_text("before\n")
    clock = LogClock(tmp_path, clock=lambda: now[0])
    clock.sample()
    now[0] = 1010.0
    with open(log, "a") as f:
        f.write("after\n")
    clock.sample()
    log.rename(tmp_path / "api" / "r1.log.1")  # the rotation, half done
    now[0] = 1011.0
    clock.sample()
    log.write_text("next\n")  # and done
    now[0] = 1020.0
    clock.sample()
    assert read_from(str(log), clock.position_since(str(log), 1005.0)) == ["after", "next"]
    (tmp_path / "api" / "r1.log.1").unlink()
    log.unlink()  # the log removed: its marks go
    clock.sample()
    assert str(log) not in clock._marks


def test_a_new_file_that_gets_a_removed_files_inode_is_not_taken_for_it(tmp_path):
    # ext4 gives a removed file's inode to the next new file at once: two rotations between two
    # samples make the new .log "the same inode" as the file of the last mark. A mark's head must be
    # the new file's own, or --since (and -f) take it for the removed one and read from the oldest
    now = [1000.0]
    path = tmp_path / "api" / "r1.log"
    writer = RotatingLogWriter(path, max_bytes=50, files=2)  # 10-byte lines: 5 per file
    clock = LogClock(tmp_path, clock=lambda: now[0])
    for i in range(3):
        writer.write(f"line {i:04d}\n".encode())
    first_inode = path.stat().st_ino
    clock.sample()  # t=1000: a mark in the first file
    for i in range(3, 13):  # two rotations, no sample: the first file is removed
        writer.write(f"line {i:04d}\n".encode())
    if path.stat().st_ino != first_inode:
        writer.close()
        pytest.skip("this file system did not reuse the removed file's inode")
    now[0] = 1010.0
    clock.sample()  # the new .log, with the removed file's inode
    now[0] = 1020.0
    writer.write(b"line 0013\nline 0014\n")
    writer.close()
    clock.sample()
    os.utime(path, (1020.0, 1020.0))
    assert read_from(str(path), clock.position_since(str(path), 1015.0)) == ["line 0013", "line 0014"]


def _write_lines(writer, now, clock, first, count, t0):
    """Write lines `first`..`first+count-1`, one per second from t0, sampling after each."""
    for i in range(first, first + count):
        now[0] = t0 + (i - first)
        writer.write(f"line {i:04d}\n".encode())
        os.utime(writer.path, (now[0], now[0]))
        clock.sample()


def test_since_reads_back_through_rotated_files_without_loss_or_repeat(tmp_path):
    now = [0.0]
    path = tmp_path / "api" / "r1.log"
    writer = RotatingLogWriter(path, max_bytes=50, files=4)  # 10-byte lines: 5 per file
    clock = LogClock(tmp_path, clock=lambda: now[0])
    _write_lines(writer, now, clock, 0, 23, t0=1000.0)  # t=1000..1022, lines 0..22
    assert len(log_files(path)) == 4  # .log.3 .log.2 .log.1 .log
    kept = [f"line {i:04d}" for i in range(5, 23)]  # lines 0..4 (the first file) rotated out
    # every `since` inside the kept window gives exactly the lines written after it
    for since, first in [(1005.5, 6), (1009.5, 10), (1010.0, 11), (1014.2, 15), (1021.5, 22)]:
        assert read_from(str(path), clock.position_since(str(path), since)) == \
            [f"line {i:04d}" for i in range(first, 23)], since
    # a mark whose file was rotated out: from the oldest kept, none repeated
    assert read_from(str(path), clock.position_since(str(path), 1001.5)) == kept
    assert read_from(str(path), clock.position_since(str(path), 2000.0)) == []
    writer.close()


def test_since_accepts_durations_and_times():
    now = dt.datetime(2026, 11, 23, 9, 0).timestamp()
    assert _parse_since("90s", now) == now - 90
    assert _parse_since("10m", now) == now - 600
    assert _parse_since("2h", now) == now - 7200
    assert _parse_since("1d", now) == now - 86400
    assert _parse_since("1h30m", now) == now - 5400  # spec/units.py reads it: Go's syntax
    assert _parse_since("08:30", now) == dt.datetime(2026, 11, 23, 8, 30).timestamp()
    assert _parse_since("2026-11-22T23:00", now) == dt.datetime(2026, 11, 22, 23, 0).timestamp()
    with pytest.raises(UsageError, match="expected a duration"):
        _parse_since("yesterday", now)


def test_logs_of_gone_replicas_are_removed_beyond_the_newest_few_never_a_live_one(tmp_path):
    from cortexd.daemon.logclock import KEEP_GONE

    api = tmp_path / "api"
    api.mkdir()
    paths = []
    for i in range(KEEP_GONE + 4):  # a crash loop: a replica, and a log, per restart
        log = api / f"api-r{i:02d}.log"
        log.write_text(f"replica {i}\n")
        (api / f"api-r{i:02d}.log.1").write_text("older part\n")
        os.utime(log, (1000.0 + i, 1000.0 + i))
        paths.append(log)
    live = {str(paths[0])}  # the oldest still runs (idle): never removed
    clock = LogClock(tmp_path, clock=lambda: 2000.0)
    clock.sample()  # without knowing what runs, nothing goes
    assert len(list(api.glob("*.log"))) == KEEP_GONE + 4
    clock.sample(live)
    kept = sorted(p.name for p in api.glob("*.log"))
    assert kept == sorted([paths[0].name] + [p.name for p in paths[-KEEP_GONE:]])
    assert not (api / "api-r01.log.1").exists() and (api / "api-r00.log.1").exists()
