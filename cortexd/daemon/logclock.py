"""When was each part of a replica log written? The basis of `cortexd logs --since`.

Replica output goes to rotated files (log_dir/<api>/<replica>.log, .log.1, ...;
cortexd/logfiles.py) whose lines carry no timestamps of their own (predictor
prints, tracebacks). Once a second the daemon records where each log ends when
it changed: a mark (t, position) says every byte before `position` was written
by time t. A position names the file by inode, so a mark stays true when its file
is renamed by a rotation. `--since T` reads from the last mark at or before T,
through the rotated files into the newest, so it shows what was written after T,
to the sampling resolution (about a second). Output older than the first mark (a
log the daemon found already written) counts as recent: shown rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from pathlib import Path

from cortexd.logfiles import HISTORY_CAP, START, Position, log_files, read_since

log = logging.getLogger("cortexd")

MAX_MARKS = 20_000  # per log: over five hours of a replica that prints every second
ROTATED_OUT = Position(-1, 0)  # a mark whose file is gone: read from the oldest file kept


class LogClock:
    def __init__(self, log_dir: Path, clock: Callable[[], float] = time.time):
        self.log_dir = Path(log_dir)
        self.clock = clock
        self._marks: dict[str, deque[tuple[float, Position]]] = {}

    def sample(self) -> None:
        """Record where every replica log ends, for those that grew (or appeared) since the last sample."""
        now = self.clock()
        seen = set()
        try:
            api_dirs = list(os.scandir(self.log_dir))
        except OSError:
            return
        for api_dir in api_dirs:
            if not api_dir.is_dir():
                continue
            try:
                entries = list(os.scandir(api_dir.path))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.endswith(".log"):
                    continue  # the rotated parts (.log.N) belong to their .log
                try:
                    st = entry.stat()
                except OSError:
                    continue
                seen.add(entry.path)
                end = Position(st.st_ino, st.st_size)
                marks = self._marks.get(entry.path)
                if marks is None:
                    marks = self._marks[entry.path] = deque(maxlen=MAX_MARKS)
                if marks and marks[-1][1].file_id != end.file_id:
                    # rotated: a file system reuses the inodes of removed files, so marks naming
                    # this inode from an earlier time are of a file since rotated out
                    for i, (t, pos) in enumerate(marks):
                        if pos.file_id == end.file_id:
                            marks[i] = (t, ROTATED_OUT)
                if not marks or marks[-1][1] != end:
                    marks.append((now, end))
        for path in [p for p in self._marks if p not in seen]:
            del self._marks[path]  # removed with its API's logs

    def position_since(self, path: str, since: float) -> Position:
        """Where in the log at `path` the output written after `since` (epoch seconds) starts."""
        files = log_files(path)
        if not files:
            return START
        newest = files[-1]
        if newest.mtime < since:
            return Position(newest.file_id, newest.size)  # nothing written since
        marks = self._marks.get(path)
        if not marks:
            return START
        i = bisect_right([t for t, _ in marks], since)
        return marks[i - 1][1] if i > 0 else START

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # a failed sample must not end the daemon
                log.exception("log clock sample failed")
            await asyncio.sleep(interval)


def read_from(path: str, position: Position, cap: int = HISTORY_CAP) -> list[str]:
    """Whole lines of the log at `path` from `position` on, through any rotation since."""
    return read_since(path, position, cap)[0]
