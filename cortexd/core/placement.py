"""GPU placement: which devices a new replica gets, or why it must wait (pure).

The reconciler asks before starting a replica that requests `compute.gpu: N`:
given the host's GPU ids (from cortexd.nvml), the ids already held by running
replicas, and the request, `place` returns explicit device ids, which the
backends turn into a Docker DeviceRequest or CUDA_VISIBLE_DEVICES.

Replicas never share a GPU. When too few are free the replica stays pending
with a reason the status view shows, as a Kubernetes pod stays Pending on
`nvidia.com/gpu`; sharing silently would let two replicas run each other out
of GPU memory, which is a worse failure than waiting. The lowest free ids are
chosen so that placement is deterministic and easy to read in `cortexd get`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """The answer for one request: device ids, or a pending reason (exactly one is set)."""

    gpu_ids: tuple[int, ...] = ()
    pending: str | None = None  # "pending: ..." sentence for the status view

    @property
    def placed(self) -> bool:
        return self.pending is None


@dataclass(frozen=True)
class GPURequest:
    """One replica asking for GPUs (`key` is how the caller finds its answer)."""

    key: str  # e.g. the replica id to be started
    api: str
    count: int


def _plural(n: int) -> str:
    return "GPU" if n == 1 else "GPUs"


def place(
    inventory: Sequence[int],
    assignments: Mapping[str, Iterable[int]],
    api: str,
    count: int,
    no_gpu_reason: str | None = None,
) -> Placement:
    """Choose `count` free GPU ids for a replica of `api`, or say why it must wait.

    inventory: the host's GPU ids (empty when NVML finds none);
    assignments: {replica_id: ids it holds}; ids not in the inventory are ignored;
    no_gpu_reason: cortexd.nvml's explanation for an empty inventory, appended if given.
    """
    if count <= 0:
        return Placement()
    if not inventory:
        why = f" ({no_gpu_reason})" if no_gpu_reason else ""
        return Placement(
            pending=f"pending: api {api!r} needs {count} {_plural(count)}, "
            f"but there is no NVIDIA GPU on this host{why}"
        )
    taken = {i for ids in assignments.values() for i in ids}
    free = [i for i in sorted(set(inventory)) if i not in taken]
    total = len(set(inventory))
    if len(free) < count:
        reason = f"pending: insufficient GPU (api {api!r} needs {count}, {len(free)} free of {total})"
        if count > total:
            reason += f"; this host has only {total} {_plural(total)}, lower compute.gpu"
        return Placement(pending=reason)
    return Placement(gpu_ids=tuple(free[:count]))
