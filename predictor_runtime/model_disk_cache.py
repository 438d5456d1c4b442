"""The disk cache of models downloaded from S3 (disk_cache_size): an LRU of version folders.

It evicts at insert time, before a download starts, so it never holds more
than `capacity` versions; local models already are on disk and are never
counted. The store (models.py) serialises put() (one load at a time), which
is what keeps that promise while a download runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable

log = logging.getLogger("predictor_runtime")

Key = tuple[str, int]  # (model name, version)

DISK_CACHE_ENV = "CORTEXD_MODEL_DISK_CACHE"


def default_root() -> str:
    """Where this process downloads models: $CORTEXD_MODEL_DISK_CACHE, else a folder of its own in TMPDIR."""
    return os.environ.get(DISK_CACHE_ENV) or os.path.join(tempfile.gettempdir(), f"cortexd-models-{os.getpid()}")


class DiskCache:
    """LRU of downloaded model versions under `root`; evicts before a download, never above `capacity`."""

    def __init__(self, root: str, capacity: int | None):
        self.root = root
        self.capacity = capacity
        self._dirs: OrderedDict[Key, str] = OrderedDict()
        self._lock = threading.Lock()  # only guards the dict; callers serialise put()

    def cached(self) -> list[Key]:
        with self._lock:
            return list(self._dirs)

    def get(self, key: Key) -> str | None:
        with self._lock:
            path = self._dirs.get(key)
            if path is not None:
                self._dirs.move_to_end(key)
            return path

    def put(self, key: Key, fill: Callable[[str], None]) -> str:
        """Make room, then fill a fresh folder for `key` (removed again if `fill` fails)."""
        if self.capacity is not None:
            while len(self._dirs) >= self.capacity:
                with self._lock:
                    old, path = self._dirs.popitem(last=False)
                log.info("disk cache full (%d): removing %s version %d", self.capacity, *old)
                shutil.rmtree(path, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)
        path = tempfile.mkdtemp(prefix=f"{key[0]}-{key[1]}-", dir=self.root)
        try:
            fill(path)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        with self._lock:
            self._dirs[key] = path
        return path

    def discard(self, key: Key) -> None:
        with self._lock:
            path = self._dirs.pop(key, None)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
