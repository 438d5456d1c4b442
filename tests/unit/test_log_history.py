"""`cortexd logs API` (history, --tail) and `-f` on logs rotated by size: whole lines, capped,
none lost or repeated at a rotation, at most max_bytes x files on disk."""

from __future__ import annotations

from cortexd import logfiles
from cortexd.logfiles import (
    START,
    RotatingLogWriter,
    log_files,
    read_history,
    read_new,
)


def total_size(path) -> int:
    return sum(f.size for f in log_files(path))


def lines_of(first: int, last: int) -> list[str]:
    return [f"line {i:04d}" for i in range(first, last)]


def write(writer: RotatingLogWriter, first: int, last: int) -> None:
    for i in range(first, last):
        writer.write(f"line {i:04d}\n".encode())


def test_history_is_capped_on_a_line_boundary_and_says_where_the_rest_is(tmp_path, monkeypatch):
    log = tmp_path / "r.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    monkeypatch.setattr(logfiles, "HISTORY_CAP", 100)
    lines, _ = read_history(log, None)
    assert lines[0].startswith("[cortexd: showing the last") and str(log) in lines[0]
    assert lines[1].startswith("line ") and lines[-1] == "line 999"
    assert sum(len(x) + 1 for x in lines[1:]) <= 100


def test_small_history_is_whole_and_tail_is_respected(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("a\nb\nc\n")
    assert read_history(log, None)[0] == ["a", "b", "c"]
    assert read_history(log, 2)[0] == ["b", "c"]
    assert read_history(log, 0)[0] == []
    assert read_history(tmp_path / "missing.log", None)[0] == []


def test_writer_rotates_by_size_and_keeps_at_most_files_of_max_bytes(tmp_path):
    path = tmp_path / "r.log"
    writer = RotatingLogWriter(path, max_bytes=100, files=3)
    write(writer, 0, 500)  # 5000 bytes through a 300-byte budget
    writer.write(b"x" * 250 + b"\n")  # one line longer than a file is split, not lost
    files = log_files(path)
    assert [f.path.name for f in files] == ["r.log.2", "r.log.1", "r.log"]
    assert all(f.size <= 100 for f in files) and total_size(path) <= 300
    writer.close()


def test_tail_and_history_span_the_rotated_files(tmp_path):
    path = tmp_path / "r.log"
    writer = RotatingLogWriter(path, max_bytes=100, files=4)  # 10-byte lines, 10 per file
    write(writer, 0, 35)  # .log.3: 0-9, .log.2: 10-19, .log.1: 20-29, .log: 30-34
    assert read_history(path, 8)[0] == lines_of(27, 35)
    assert read_history(path, None)[0] == lines_of(0, 35)
    write(writer, 35, 47)  # 0-9 rotated out
    assert read_history(path, None)[0] == lines_of(10, 47)
    writer.close()


def test_follow_goes_into_the_new_file_without_loss_or_repeat(tmp_path):
    path = tmp_path / "r.log"
    writer = RotatingLogWriter(path, max_bytes=100, files=5)
    write(writer, 0, 7)
    seen, at = read_history(path, 3)
    assert seen == lines_of(4, 7)
    for first, last in [(7, 9), (9, 14), (14, 40), (40, 41), (41, 41), (41, 60)]:  # rotations between polls
        write(writer, first, last)
        got, at = read_new(path, at)
        seen += got
    assert seen == lines_of(4, 60)
    writer.write(b"partial")  # a line without its newline yet waits
    got, at = read_new(path, at)
    assert got == []
    writer.write(b" line\n")
    assert read_new(path, at)[0] == ["partial line"]
    writer.close()


def test_follow_reads_in_bounded_chunks_across_files(tmp_path):
    path = tmp_path / "r.log"
    writer = RotatingLogWriter(path, max_bytes=100, files=5)
    write(writer, 0, 45)
    seen, at, rounds = [], START, 0
    while rounds < 100:
        got, at = read_new(path, at, chunk=25)
        if not got:
            break
        assert len(got) <= 3
        seen += got
        rounds += 1
    assert seen == lines_of(0, 45)
    writer.write(b"y" * 60 + b"\n")  # a line longer than a chunk comes in pieces, not never
    got, at = read_new(path, at, chunk=25)
    assert got == ["y" * 25]
    writer.close()


def test_follow_behind_a_whole_retention_resumes_at_the_oldest_file_kept(tmp_path):
    path = tmp_path / "r.log"
    writer = RotatingLogWriter(path, max_bytes=100, files=2)
    write(writer, 0, 5)
    _, at = read_history(path, 0)
    write(writer, 5, 40)  # the follower's file and the next are rotated out
    got, _ = read_new(path, at)
    assert got == lines_of(20, 40)
    writer.close()


def test_rotation_limits_come_from_flags_then_environment_with_clear_errors():
    import pytest

    from cortexd.errors import UsageError
    from cortexd.settings import configured

    base = configured({}, {})
    assert (base.log_max_bytes, base.log_files) == (10 * 2**20, 5)
    env = {"CORTEXD_LOG_MAX_SIZE": "512Ki", "CORTEXD_LOG_FILES": "3"}
    s = configured({}, env)
    assert (s.log_max_bytes, s.log_files) == (512 * 1024, 3)
    s = configured({"log_max_bytes": "2Mi", "log_files": 2}, env)
    assert (s.log_max_bytes, s.log_files) == (2 * 2**20, 2)
    # one meaning per unit, compute.mem's (Kubernetes'): M is 10^6 bytes, Mi 2^20
    assert configured({"log_max_bytes": "10M"}, {}).log_max_bytes == 10 * 10**6
    with pytest.raises(UsageError, match="expected a size such as 10M"):
        configured({}, {"CORTEXD_LOG_MAX_SIZE": "lots"})
    with pytest.raises(UsageError, match="powers of 1024"):  # 512K: no such quantity (k or Ki)
        configured({"log_max_bytes": "512K"}, {})
    with pytest.raises(UsageError, match="at least 1"):
        configured({"log_files": 0}, {})
