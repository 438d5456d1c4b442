"""The replica's in-flight request count, and its Prometheus exposition at GET /metrics.

On Kubernetes the pods themselves are the only place that knows how many
requests they hold (cortexd's gateway counts them on one host): an HPA reads
`cortexd_in_flight_requests` through a Prometheus adapter and scales on it,
as Cortex's autoscaler did on its queue length.

With processes_per_replica > 1 the workers share the port (SO_REUSEPORT), so
a scrape lands on any one of them: each worker keeps its count in its own
8-byte slot of a small shared file, and /metrics sums the slots. One worker: a
plain integer. The supervisor makes the file (shared_gauge_file) in a folder of
its own under the replica's TMPDIR (private to the replica; a tmpfs /tmp in the
image), created exclusively, never through a symlink; it names it to the workers
in INFLIGHT_FILE_ENV and removes the folder when it exits.
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import tempfile

METRIC = "cortexd_in_flight_requests"
INFLIGHT_FILE_ENV = "PREDICTOR_RUNTIME_INFLIGHT_FILE"  # supervisor -> workers
_SLOT = struct.Struct("q")


def shared_gauge_file(slots: int) -> str:
    """(supervisor) A new gauge file of `slots` slots in a new private folder of the temp dir;
    its path. remove_shared_gauge_file() removes both."""
    folder = tempfile.mkdtemp(prefix="cortexd-inflight-")
    path = os.path.join(folder, "in-flight")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, _SLOT.size * slots)
    finally:
        os.close(fd)
    return path


def remove_shared_gauge_file(path: str) -> None:
    folder = os.path.dirname(path)
    if os.path.basename(folder).startswith("cortexd-inflight-"):
        shutil.rmtree(folder, ignore_errors=True)


class InFlight:
    """enter()/leave() around each prediction; total() is the replica-wide count."""

    def __init__(self) -> None:
        self.count = 0
        self._shared: mmap.mmap | None = None
        self._offset = 0

    @classmethod
    def shared(cls, path: str, index: int, slots: int) -> InFlight:
        """Worker `index` (1..slots) of a replica, on the supervisor's gauge file (opened, never
        created, never through a symlink); a local count if the file fails."""
        gauge = cls()
        size = _SLOT.size * slots
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            try:
                if os.fstat(fd).st_size < size:
                    return gauge
                gauge._shared = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return gauge
        gauge._offset = _SLOT.size * (index - 1)
        _SLOT.pack_into(gauge._shared, gauge._offset, 0)
        return gauge

    def enter(self) -> None:
        self.count += 1
        if self._shared is not None:
            _SLOT.pack_into(self._shared, self._offset, self.count)

    def leave(self) -> None:
        self.count -= 1
        if self._shared is not None:
            _SLOT.pack_into(self._shared, self._offset, self.count)

    def total(self) -> int:
        if self._shared is None:
            return self.count
        n = len(self._shared) // _SLOT.size
        return sum(max(0, _SLOT.unpack_from(self._shared, i * _SLOT.size)[0]) for i in range(n))

    def exposition(self) -> bytes:
        """Prometheus text format (version 0.0.4)."""
        return (f"# HELP {METRIC} Requests this replica has received and not answered yet (all workers).\n"
                f"# TYPE {METRIC} gauge\n{METRIC} {self.total()}\n").encode()


PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def gauge_for(processes: int, index: int) -> InFlight:
    """The gauge of worker `index` of a replica's `processes` (processes_per_replica)."""
    path = os.environ.get(INFLIGHT_FILE_ENV)
    if processes <= 1 or not path:
        return InFlight()
    return InFlight.shared(path, index, processes)
