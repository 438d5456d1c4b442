"""When was each part of a replica log written? The basis of `cortexd logs --since`.

Replica output goes to plain files (log_dir/<api>/<replica>.log) whose lines carry
no timestamps of their own (predictor prints, tracebacks). Once a second the
daemon records each file's size when it changed: a mark (t, size) says every
byte before `size` was written by time t. `--since T` starts reading at the size
of the last mark at or before T, so it shows what was written after T, to the
sampling resolution (about a second). Output older than the first mark (a file
the daemon found already written) counts as recent: shown rather than lost.
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

log = logging.getLogger("cortexd")

MAX_MARKS = 20_000  # per file: over five hours of a replica that prints every second


class LogClock:
    def __init__(self, log_dir: Path, clock: Callable[[], float] = time.time):
        self.log_dir = Path(log_dir)
        self.clock = clock
        self._marks: dict[str, deque[tuple[float, int]]] = {}

    def sample(self) -> None:
        """Record the size of every replica log that grew (or appeared) since the last sample."""
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
                    continue
                try:
                    size = entry.stat().st_size
                except OSError:
                    continue
                seen.add(entry.path)
                marks = self._marks.get(entry.path)
                if marks is None:
                    marks = self._marks[entry.path] = deque(maxlen=MAX_MARKS)
                if not marks or marks[-1][1] != size:
                    marks.append((now, size))
        for path in [p for p in self._marks if p not in seen]:
            del self._marks[path]  # removed with its API's logs

    def offset_since(self, path: str, since: float) -> int:
        """Byte offset in `path` from which output was written after `since` (epoch seconds)."""
        try:
            st = os.stat(path)
        except OSError:
            return 0
        if st.st_mtime < since:
            return st.st_size  # nothing written since
        marks = self._marks.get(path)
        if not marks:
            return 0
        times = [t for t, _ in marks]
        i = bisect_right(times, since)
        return marks[i - 1][1] if i > 0 else 0

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:  # a failed sample must not end the daemon
                log.exception("log clock sample failed")
            await asyncio.sleep(interval)


def read_from(path: str, offset: int) -> list[str]:
    """Whole lines of `path` from byte `offset` (a partial last line waits for `follow`)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()
