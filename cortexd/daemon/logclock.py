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

Each replica's log is bounded by rotation, and the number of logs too: every restart
and scale-up makes a replica (and a log) of its own, so the sampler also removes the
logs of replicas that are gone beyond the newest KEEP_GONE of each API (what
`cortexd logs` shows of dead replicas), never the log of a replica that runs.
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

from cortexd.logfiles import (
    START,
    Position,
    log_files,
    open_log_file,
)

log = logging.getLogger("cortexd")

MAX_MARKS = 20_000  # per log: over five hours of a replica that prints every second
KEEP_GONE = 8  # per API: logs of replicas that are gone, newest first


class LogClock:
    def __init__(self, log_dir: Path, clock: Callable[[], float] = time.time,
                 live: Callable[[], set[str] | None] | None = None):
        self.log_dir = Path(log_dir)
        self.clock = clock
        self.live = live  # the log paths of running replicas (read on the loop); None: remove none
        self._marks: dict[str, deque[tuple[float, Position]]] = {}

    def sample(self, live: set[str] | None = None) -> None:
        """Record where every replica log ends, for those that grew (or appeared) since the last
        sample; with `live`, remove the logs of gone replicas beyond the newest KEEP_GONE per API."""
        seen: set[str] = set()
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
                seen.update(p for p in self._marks if os.path.dirname(p) == api_dir.path)  # kept: unread
                continue
            gone: list[tuple[float, str]] = []
            for entry in entries:
                # a log whose .log is missing for a moment (a rotation renamed it and is about to
                # make the next) keeps its marks while its parts are there: only a removed log loses them
                stem, dot, suffix = entry.name.rpartition(".")
                if dot and suffix.isdigit() and stem.endswith(".log"):
                    seen.add(os.path.join(api_dir.path, stem))
                if not entry.name.endswith(".log"):
                    continue  # the rotated parts (.log.N) belong to their .log
                seen.add(entry.path)
                # inode, size and head from one open file (logfiles.LogFile: a reused inode is told
                # apart from the removed file's by its head)
                f = open_log_file(Path(entry.path))
                if f is None:
                    continue
                # the time after the size: every byte before it was written by then (a time read
                # before it could claim bytes written later, and --since would skip them)
                now = self.clock()
                if live is not None and os.path.abspath(entry.path) not in live:
                    gone.append((f.mtime, entry.path))
                marks = self._marks.get(entry.path)
                if marks is None:
                    marks = self._marks[entry.path] = deque(maxlen=MAX_MARKS)
                last = marks[-1][1] if marks else None
                if last is not None and (last.file_id, last.offset, last.head) == (f.file_id, f.size, f.first):
                    continue
                marks.append((now, f.position(f.size)))
            for _, path in sorted(gone, reverse=True)[KEEP_GONE:]:
                remove_log(path)
                seen.discard(path)
        for path in [p for p in self._marks if p not in seen]:
            del self._marks[path]  # removed with its API's logs

    def position_since(self, path: str, since: float) -> Position:
        """Where in the log at `path` the output written after `since` (epoch seconds) starts."""
        files = log_files(path)
        if not files:
            return START
        newest = files[-1]
        if newest.mtime < since:
            return newest.position(newest.size)  # nothing written since
        # one C call copies it: the sampler's thread may append meanwhile (iterating the deque
        # itself while it does would raise "deque mutated during iteration")
        marks = tuple(self._marks.get(path) or ())
        if not marks:
            return START
        i = bisect_right([t for t, _ in marks], since)
        return marks[i - 1][1] if i > 0 else START

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                live = self.live() if self.live is not None else None  # on the loop: daemon state
                await asyncio.to_thread(self.sample, live)
            except Exception:  # a failed sample must not end the daemon
                log.exception("log clock sample failed")
            await asyncio.sleep(interval)


def remove_log(path: str) -> None:
    """Remove a log and its rotated parts."""
    for f in log_files(path):
        try:
            os.unlink(f.path)
        except OSError:
            pass
