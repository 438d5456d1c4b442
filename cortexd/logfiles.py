"""Log files rotated by size, and reading them back across the rotation.

One log is `name.log` (the newest output) and its older parts `name.log.1` (the
previous one) .. `name.log.<files-1>` (the oldest kept), like Python's
RotatingFileHandler: at most `files` files of at most `max_bytes` each, so a
predictor that prints without end fills at most max_bytes x files of disk.
Replica output (the process backend's pump, the Docker backend's copier) is
written with RotatingLogWriter; the daemon's own log with DaemonLogHandler.

Readers never lose or repeat a line at a rotation boundary because they name a
place in a log by the file's identity (its inode, which a rename keeps) and an
offset in it (Position), not by a path: after a rotation the place is found in
`name.log.1` and reading goes on into the newer file. Pure apart from reading
files; the clock of `--since` is daemon/logclock.py.
"""

from __future__ import annotations

import logging.handlers
import os
import shutil
from collections import deque
from pathlib import Path
from typing import NamedTuple

from cortexd.spec.units import format_bytes, parse_memory

DEFAULT_MAX_BYTES = parse_memory("10Mi")  # `--log-max-size`'s default (cortexd/settings.py)
DEFAULT_FILES = 5
HEAD_BYTES = 64
TAIL_BYTES = 256 * 1024  # `--tail N` reads at most this much from the end
HISTORY_CAP = 16 * 2**20  # `cortexd logs API` without --tail shows at most this much per replica
FOLLOW_CHUNK = 2**20  # `-f` reads at most this much per log and round


class Position(NamedTuple):
    """A place in a rotated log: byte `offset` of the file whose inode is `file_id` and whose
    first bytes are `head` (file systems reuse the inode of a removed file for the next new
    one: the head tells the two apart). file_id 0 means the start of the oldest file kept."""

    file_id: int
    offset: int
    head: bytes = b""


START = Position(0, 0)


# -- writing --------------------------------------------------------------------------------


def rotate(path: Path, files: int) -> None:
    """Shift `path` to `path.1`, `path.1` to `path.2` ...; the oldest beyond `files` goes."""
    for i in range(files - 1, 0, -1):
        older = Path(f"{path}.{i}")
        newer = Path(f"{path}.{i - 1}") if i > 1 else path
        try:
            os.replace(newer, older)
        except FileNotFoundError:
            pass
    if files <= 1:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _append_nofollow(path: Path):
    """The log at `path` opened to append, never through a symbolic link (OSError ELOOP: a link
    planted where a log goes is refused, not written through)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    return os.fdopen(fd, "ab", buffering=0)


class RotatingLogWriter:
    """Appends bytes to a log, rotating before a file would pass max_bytes.

    Writes are cut at a line end where one is in reach, so a line stays in one
    file unless it alone is longer than max_bytes. Not thread-safe: one writer
    (one thread) per log.
    """

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES, files: int = DEFAULT_FILES):
        self.path = Path(path)
        self.max_bytes = max(1, int(max_bytes))
        self.files = max(1, int(files))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _append_nofollow(self.path)
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - self._size
            if len(view) <= room:
                self._put(view)
                return
            cut = bytes(view[:room]).rfind(b"\n") + 1 if room > 0 else 0
            if cut:
                self._put(view[:cut])
                view = view[cut:]
            elif self._size == 0:  # one line longer than a whole file: it has to be split
                self._put(view[:room])
                view = view[room:]
            self._rotate()

    def _put(self, data) -> None:
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        rotate(self.path, self.files)
        self._file = _append_nofollow(self.path)
        self._size = 0

    def close(self) -> None:
        self._file.close()


class DaemonLogHandler(logging.handlers.RotatingFileHandler):
    """daemon.log, rotated by size; optionally with this process's stdout and stderr in it.

    A detached daemon's file descriptors 1 and 2 point into daemon.log, so what
    bypasses logging (a traceback printed at exit, a warning from C code) lands
    there too. After each rotation they are pointed at the new file: else they
    would go on growing the renamed one without bound. Their bytes count toward
    the size checked at the next record.
    """

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES, files: int = DEFAULT_FILES,
                 *, capture_std: bool = False):
        super().__init__(str(path), maxBytes=max(1, int(max_bytes)), backupCount=max(0, int(files) - 1),
                         encoding="utf-8", errors="backslashreplace")
        self.capture_std = capture_std
        if capture_std:
            self._point_std()

    def _open(self):
        # never through a symbolic link planted where daemon.log goes (UnsafeHome names it)
        from cortexd.home import open_nofollow

        fd = open_nofollow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def _point_std(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        self.stream.flush()
        for fd in (1, 2):
            os.dup2(self.stream.fileno(), fd)

    def doRollover(self) -> None:
        super().doRollover()
        if self.capture_std:
            self._point_std()


# -- the previous run ------------------------------------------------------------------------


def keep_previous_logs(log_dir: Path | str, previous_dir: Path | str) -> bool:
    """At a daemon's start: the replica logs the previous run left (log_dir) become previous_dir,
    replacing the run before it, so `cortexd logs API --previous` shows a crashed replica's
    traceback after a restart (as `kubectl logs --previous` shows the last container's). One run
    is kept, each log as rotated (size x files) and no more of them than that run kept; a run
    that wrote no replica log (a start that failed early) leaves the previous one alone.
    True when the logs were moved."""
    log_dir, previous_dir = Path(log_dir), Path(previous_dir)
    try:
        wrote = any(f.name.endswith(".log") or ".log." in f.name
                    for api in log_dir.iterdir() if api.is_dir() for f in api.iterdir())
    except OSError:
        return False
    if not wrote:
        return False
    shutil.rmtree(previous_dir, ignore_errors=True)
    os.replace(log_dir, previous_dir)
    return True


def previous_logs(previous_dir: Path | str, api: str) -> list[tuple[str, str]]:
    """(replica id, log file) of `api`'s replicas in the previous run's logs, oldest first (none:
    that run kept no log of it). The folder is found among those listed, never made from `api`."""
    previous_dir = Path(previous_dir)
    try:
        if api not in os.listdir(previous_dir):
            return []
        files = [(f.stat().st_mtime, f) for f in (previous_dir / api).iterdir() if f.name.endswith(".log")]
    except OSError:
        return []
    return [(f.name[:-len(".log")], str(f)) for _, f in sorted(files)]


# -- reading --------------------------------------------------------------------------------


class LogFile(NamedTuple):
    """One file of a log as it was listed: its inode, size and mtime, and its first bytes, all read
    from one open file. The head is never taken from an earlier Position of the same inode: a file
    system gives a removed file's inode to the next new file at once, so after a few rotations
    "the same inode" is another file, and only its own first bytes tell."""

    path: Path
    file_id: int
    size: int
    mtime: float
    first: bytes = b""  # its first HEAD_BYTES bytes when listed

    def head(self) -> bytes:
        return self.first

    def position(self, offset: int) -> Position:
        return Position(self.file_id, offset, self.first)


def open_log_file(path: Path) -> LogFile | None:
    """The file at `path` now (None: there is none): identity, size and head from one open file."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            first = fh.read(HEAD_BYTES)
    except OSError:
        return None
    return LogFile(path, st.st_ino, st.st_size, st.st_mtime, first)


def _find(files: list[LogFile], at: Position) -> int | None:
    """The index of `at`'s file among `files`, None when it was rotated out."""
    for i, f in enumerate(files):
        if f.file_id == at.file_id:
            head = f.head() if at.head else b""
            n = min(len(head), len(at.head))
            return i if head[:n] == at.head[:n] else None
    return None


def log_files(path: Path | str) -> list[LogFile]:
    """The files of one log that exist now, oldest first (path.N .. path.1, path)."""
    path = Path(path)
    numbered: list[tuple[int, Path]] = []
    try:
        with os.scandir(path.parent) as entries:
            prefix = path.name + "."
            for entry in entries:
                suffix = entry.name[len(prefix):] if entry.name.startswith(prefix) else ""
                if suffix.isdigit():
                    numbered.append((int(suffix), Path(entry.path)))
    except OSError:
        pass
    out = []
    for _, p in sorted(numbered, reverse=True) + [(0, path)]:
        f = open_log_file(p)
        if f is not None:
            out.append(f)
    return out


def end_position(path: Path | str) -> Position:
    """Where the log ends now: what `-f` reads from after the history."""
    files = log_files(path)
    return files[-1].position(files[-1].size) if files else START


def _read_range(f: LogFile, start: int, end: int) -> bytes:
    try:
        with open(f.path, "rb") as fh:
            if os.fstat(fh.fileno()).st_ino != f.file_id:
                return b""  # rotated away while we looked
            fh.seek(start)
            return fh.read(max(0, end - start))
    except OSError:
        return b""


def read_since(path: Path | str, since: Position, cap: int = HISTORY_CAP) -> tuple[list[str], Position]:
    """Whole lines written after `since` (at most the last `cap` bytes of them) and where they end.

    A position whose file was rotated out reads from the oldest file kept.
    """
    files = log_files(path)
    if not files:
        return [], since
    first = _find(files, since)
    start_offset = since.offset if first is not None else 0
    first = first or 0
    parts: list[bytes] = []
    budget = cap
    cut = False
    for i in range(len(files) - 1, first - 1, -1):  # newest back, until the cap
        f = files[i]
        begin = start_offset if i == first else 0
        begin = min(begin, f.size)
        take_from = max(begin, f.size - budget)
        if take_from > begin:
            cut = True
        parts.append(_read_range(f, take_from, f.size))
        budget -= f.size - take_from
        if budget <= 0:
            break
    data = b"".join(reversed(parts))
    last = files[-1]
    if not data.endswith(b"\n"):  # a partial last line waits for its newline (or the next round)
        keep = data.rfind(b"\n") + 1
        if len(data) - keep <= last.size:
            end = last.position(last.size - (len(data) - keep))
            data = data[:keep]
        else:
            end = last.position(last.size)
    else:
        end = last.position(last.size)
    if cut:
        data = data[data.find(b"\n") + 1:]  # start on a whole line
    return data.decode("utf-8", "replace").splitlines(), end


def read_tail(path: Path | str, tail: int | None) -> list[str]:
    """The last `tail` lines (all, up to HISTORY_CAP, when None) of a rotated log."""
    lines, _ = read_history(path, tail)
    return lines


def read_history(path: Path | str, tail: int | None) -> tuple[list[str], Position]:
    """A replica log for `cortexd logs`: the last `tail` lines, or all of it up to HISTORY_CAP
    (then the start is cut and a first line says where the whole log is); and where it ends."""
    files = log_files(path)
    total = sum(f.size for f in files)
    cap = TAIL_BYTES if tail is not None else HISTORY_CAP
    lines, end = read_since(path, START, cap)
    if tail is not None:
        return list(deque(lines, maxlen=max(0, tail))), end
    if total > cap:
        lines.insert(0, f"[cortexd: showing the last {format_bytes(cap)} of "
                        f"{format_bytes(total, 0, smallest='MiB')}; "
                        f"the whole log is {path} and its older parts {path}.N]")
    return lines, end


def read_new(path: Path | str, at: Position, chunk: int = FOLLOW_CHUNK) -> tuple[list[str], Position]:
    """`-f`: whole lines written after `at` (at most about `chunk` bytes) and the next position.

    Follows into the newer file when `at`'s file was rotated; a file that is not
    the newest is complete, so its last line is given even without a newline.
    """
    files = log_files(path)
    if not files:
        return [], at
    i = _find(files, at)
    # a file rotated out entirely (or START): from the oldest kept
    i, offset = (0, 0) if i is None else (i, at.offset)
    lines: list[str] = []
    budget = chunk
    while True:
        f = files[i]
        if offset > f.size:  # truncated under us: read it again
            offset = 0
        data = _read_range(f, offset, min(f.size, offset + budget))
        complete = i < len(files) - 1 and offset + len(data) >= f.size
        cut = data.rfind(b"\n") + 1
        if not complete and (cut or len(data) < chunk):
            data = data[:cut]  # only whole lines; a partial one waits (unless longer than a chunk)
        lines.extend(data.decode("utf-8", "replace").splitlines())
        offset += len(data)
        budget -= len(data)
        if not complete:
            return lines, f.position(offset)
        i, offset = i + 1, 0
        if budget <= 0:
            return lines, files[i].position(0)


def read_lines(path: str, tail: int | None, since: Position | None) -> tuple[list[str], Position]:
    """A log's history: every line written after `since`, or else its last `tail` lines."""
    if since is not None:
        return read_since(path, since)
    return read_history(path, tail)


def read_new_all(followed: list[tuple[str, str, Position]]) -> list[tuple[str, list[str], Position]]:
    """(name, the lines written since, the position after them) for each followed (name, path, position)."""
    return [(name, *read_new(path, at)) for name, path, at in followed]
