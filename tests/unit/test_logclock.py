"""logs --since: LogClock maps a time to the byte offset written after it; the CLI parses WHEN."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from cortexd.cli import UsageError, _parse_since
from cortexd.daemon.logclock import LogClock, read_from


def test_offset_since_follows_the_sampled_sizes(tmp_path):
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
    assert read_from(path, clock.offset_since(path, 999.0)) == ["old", "new 1", "new 2"]  # before any mark
    assert read_from(path, clock.offset_since(path, 1005.0)) == ["new 1", "new 2"]
    assert read_from(path, clock.offset_since(path, 1015.0)) == ["new 2"]
    assert clock.offset_since(path, 1030.0) == log.stat().st_size  # nothing written since
    log.unlink()
    clock.sample()
    assert clock.offset_since(path, 1005.0) == 0


def test_since_accepts_durations_and_times():
    now = dt.datetime(2026, 11, 23, 9, 0).timestamp()
    assert _parse_since("90s", now) == now - 90
    assert _parse_since("10m", now) == now - 600
    assert _parse_since("2h", now) == now - 7200
    assert _parse_since("08:30", now) == dt.datetime(2026, 11, 23, 8, 30).timestamp()
    assert _parse_since("2026-11-22T23:00", now) == dt.datetime(2026, 11, 22, 23, 0).timestamp()
    with pytest.raises(UsageError, match="expected a duration"):
        _parse_since("yesterday", now)
