"""The reconciler's GPU placer: NVML inventory (cortexd.nvml) + pure placement (cortexd.core.placement).

The reconciler calls assign() right before it starts a replica that requests
`compute.gpu: N`. The ids held by replicas come from what the backend observes
(ReplicaInfo.gpu_ids, read back from container labels or kept by the process
backend), so a restarted daemon sees the GPUs its adopted replicas hold. The
inventory is re-read at most every `refresh` seconds: a GPU that appears (driver
loaded later) or falls off the bus is noticed without restarting the daemon.

A BatchAPI job's workers are placed by the same rule (`assign_worker`): the ids a worker holds
are counted as held when replicas (and other workers) are placed, until `release_worker`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from cortexd.backends.base import ReplicaInfo
from cortexd.core.placement import Placement, place
from cortexd.nvml import GPUInventory, GPUMonitor
from cortexd.spec.model import APISpec


class GPUPlacer:
    def __init__(self, read: Callable[[], GPUInventory] | None = None, *, refresh: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._monitor: GPUMonitor | None = None
        if read is None:
            self._monitor = GPUMonitor()
            read = self._monitor.read
        self._read = read
        self._refresh = refresh
        self._clock = clock
        self._inventory: GPUInventory | None = None
        self._read_at = float("-inf")
        self._workers: dict[str, tuple[int, ...]] = {}  # worker id -> the GPUs it holds

    def inventory(self) -> GPUInventory:
        now = self._clock()
        if self._inventory is None or now - self._read_at >= self._refresh:
            self._inventory = self._read()
            self._read_at = now
        return self._inventory

    def assign(self, spec: APISpec, replica_id: str, observed: Mapping[str, ReplicaInfo]) -> Placement:
        """The gpu ids for the new replica, or why it must wait ("pending: ..."), or that this
        host has no GPU at all (`none_on_host`)."""
        inv = self.inventory()
        held = {rid: info.gpu_ids for rid, info in observed.items()
                if info.state != "exited" and info.gpu_ids}
        return place(inv.ids, {**held, **self._workers}, spec.name, spec.replica_gpus, inv.reason)

    def assign_worker(self, spec: APISpec, worker_id: str, observed: Mapping[str, ReplicaInfo]) -> Placement:
        """assign() for a job's worker; the ids placed are held until release_worker()."""
        placement = self.assign(spec, worker_id, observed)
        if placement.gpu_ids:
            self._workers[worker_id] = placement.gpu_ids
        return placement

    def release_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()


class WorkerPlacement:
    """seams.WorkerGPUs for the job runner: a worker placed against the reconciler's `observed()`
    replicas and the other workers."""

    def __init__(self, placer: GPUPlacer, observed: Callable[[], Mapping[str, ReplicaInfo]]):
        self._placer = placer
        self._observed = observed

    def place(self, spec: APISpec, worker_id: str) -> Placement:
        return self._placer.assign_worker(spec, worker_id, self._observed())

    def release(self, worker_id: str) -> None:
        self._placer.release_worker(worker_id)
