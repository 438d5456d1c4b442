"""The reconciler's GPU placer: NVML inventory (cortexd.nvml) + pure placement (cortexd.core.placement).

The reconciler calls assign() right before it starts a replica that requests
`compute.gpu: N`. The ids held by replicas come from what the backend observes
(ReplicaInfo.gpu_ids, read back from container labels or kept by the process
backend), so a restarted daemon sees the GPUs its adopted replicas hold. The
inventory is re-read at most every `refresh` seconds: a GPU that appears (driver
loaded later) or falls off the bus is noticed without restarting the daemon.
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
        return place(inv.ids, held, spec.name, spec.replica_gpus, inv.reason)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
