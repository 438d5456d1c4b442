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

A host with no GPU at all is not a wait: nothing frees one, so the answer says so
(`Placement.none_on_host`) and the reconciler shows the API in `error` at once with
the remedy (`no_gpu_on_host`): Cortex's own (remove compute.gpu), or cortexd's switch
that serves such APIs on the CPU (`on_cpu_note` is what is shown then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the status model imports this module without the spec package
    from cortexd.spec.model import APISpec


@dataclass(frozen=True)
class Placement:
    """The answer for one request: device ids, or a pending reason (exactly one is set)."""

    gpu_ids: tuple[int, ...] = ()
    pending: str | None = None  # "pending: ..." sentence for the status view
    none_on_host: bool = False  # the host has no GPU at all: nothing will free one
    host_reason: str | None = None  # then why (cortexd.nvml's explanation), if known

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
            f"but there is no NVIDIA GPU on this host{why}",
            none_on_host=True,
            host_reason=no_gpu_reason,
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


def no_gpu_on_host(api: str, count: int, reason: str | None, switch: str) -> str:
    """What an API that requests `count` GPUs shows on a host without any, and what to do;
    `switch`: the daemon option that serves such APIs on the CPU (settings: --cpu-only)."""
    why = f": {reason}" if reason else ""  # NVML's reason has parentheses of its own
    return (f"api {api!r} requests compute.gpu: {count}, but this host has no NVIDIA GPU{why}; "
            f"remove compute.gpu from its configuration (or set it to 0), or serve it on the CPU "
            f"for local work with `cortexd up {switch}` or `cortexd deploy {switch}`")


def on_cpu_note(count: int, switch: str, host_has_gpu: bool | None) -> str:
    """The line an API served on the CPU shows (`get API`, the live view, `up`, `deploy`);
    host_has_gpu: None when not known."""
    note = f"compute.gpu: {count} requested; running on CPU ({switch})"
    return note + (": this host has no GPU" if host_has_gpu is False else "")


def gpu_notices(specs: Iterable[APISpec], host_gpus: int, reason: str | None, switch: str,
                cpu_only: bool = False) -> list[str]:
    """What `up` and `deploy` say at once of the APIs that request compute.gpu: that one is served on
    the CPU (its note), or, on a host without a GPU, that it cannot start and what to do.
    host_gpus: the GPUs NVML found (reason: why none); cpu_only: the switch is on for all `specs`."""
    out = []
    for spec in specs:
        if spec.compute.gpu <= 0:
            continue
        if spec.cpu_only or cpu_only:
            out.append(f"api {spec.name!r}: {on_cpu_note(spec.compute.gpu, switch, host_gpus > 0)}")
        elif host_gpus == 0:
            out.append(no_gpu_on_host(spec.name, spec.compute.gpu, reason, switch))
    return out
