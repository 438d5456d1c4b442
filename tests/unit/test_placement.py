"""GPU placement decisions and the GPU inventory a host reports.

Placement is pure: inventories and assignments are values. The inventory
tests use this host's real NVML (none here: the reason must say so) and a
stand-in for the nvidia-ml-py module for a host with GPUs.
"""

from __future__ import annotations

from types import SimpleNamespace

from cortexd.core.placement import GPURequest, Placement, place
from cortexd.nvml import GPUMonitor, read_inventory


def test_enough_free_gpus_get_the_lowest_free_ids():
    assert place([0, 1, 2, 3], {}, "bert", 2) == Placement(gpu_ids=(0, 1))
    assert place([0, 1, 2, 3], {"bert-a": [0], "bert-b": (2,)}, "bert", 2) == Placement(gpu_ids=(1, 3))


def test_cpu_replicas_need_no_placement_even_without_gpus():
    p = place([], {}, "iris", 0)
    assert p.placed and p.gpu_ids == ()


def test_not_enough_free_gpus_stays_pending_without_sharing():
    p = place([0, 1, 2, 3], {"a": [0, 1], "b": [2]}, "x", 2)
    assert not p.placed and p.gpu_ids == ()
    assert p.pending == "pending: insufficient GPU (api 'x' needs 2, 1 free of 4)"


def test_asking_for_more_gpus_than_the_host_has_says_so():
    p = place([0, 1], {}, "big", 3)
    assert p.pending == (
        "pending: insufficient GPU (api 'big' needs 3, 2 free of 2); this host has only 2 GPUs, lower compute.gpu"
    )


def test_no_gpu_on_the_host_names_the_api_and_the_reason():
    p = place([], {}, "resnet", 1, no_gpu_reason="no NVIDIA driver found (NVML: NVML Shared Library Not Found)")
    assert p.pending == (
        "pending: api 'resnet' needs 1 GPU, but there is no NVIDIA GPU on this host "
        "(no NVIDIA driver found (NVML: NVML Shared Library Not Found))"
    )


def test_assignments_of_devices_gone_from_the_inventory_are_ignored():
    assert place([0, 1], {"old": [5]}, "x", 2) == Placement(gpu_ids=(0, 1))


def place_in_order(inventory, assignments, requests):
    """What the GPU placer does with the replicas it starts in one pass: each placed one holds
    its ids for the next (daemon/gpu_placer.py calls place() per replica)."""
    held = {k: tuple(v) for k, v in assignments.items()}
    out = {}
    for req in requests:
        out[req.key] = p = place(inventory, held, req.api, req.count)
        if p.gpu_ids:
            held[req.key] = p.gpu_ids
    return out


def test_mixed_requests_fill_free_gpus_in_order_and_small_ones_pass_a_waiting_big_one():
    results = place_in_order(
        [0, 1, 2],
        {"running": [1]},
        [
            GPURequest("a-1", "a", 1),
            GPURequest("big-1", "big", 2),
            GPURequest("cpu-1", "cpu", 0),
            GPURequest("c-1", "c", 1),
            GPURequest("d-1", "d", 1),
        ],
    )
    assert results["a-1"].gpu_ids == (0,)
    assert results["big-1"].pending == "pending: insufficient GPU (api 'big' needs 2, 1 free of 3)"
    assert results["cpu-1"].placed and results["cpu-1"].gpu_ids == ()
    assert results["c-1"].gpu_ids == (2,)
    assert results["d-1"].pending == "pending: insufficient GPU (api 'd' needs 1, 0 free of 3)"


def test_this_hosts_inventory_is_a_value_never_an_exception():
    inv = read_inventory()
    if inv.devices:
        assert inv.reason is None and inv.ids == tuple(range(len(inv.devices)))
    else:
        assert inv.ids == ()
        assert inv.reason and ("NVML" in inv.reason or "nvidia-ml-py" in inv.reason or "no GPU" in inv.reason)


class NVMLError(Exception):
    pass


def fake_nvml(devices: list[dict] | None, init_error: str | None = None) -> SimpleNamespace:
    """A stand-in for the pynvml module (the third-party seam), shaped like its API."""

    def init():
        if init_error:
            raise NVMLError(init_error)

    def util(h):
        if devices[h].get("util") is None:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=devices[h]["util"], memory=0)

    return SimpleNamespace(
        nvmlInit=init,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlDeviceGetCount=lambda: len(devices or []),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: devices[h]["uuid"],
        nvmlDeviceGetName=lambda h: devices[h]["name"],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=devices[h]["total"], used=devices[h]["used"], free=0),
        nvmlDeviceGetUtilizationRates=util,
    )


def test_inventory_of_a_host_with_gpus():
    nvml = fake_nvml([
        {"uuid": "GPU-aaa", "name": b"NVIDIA H100", "total": 80 * 2**30, "used": 2**30, "util": 37},
        {"uuid": "GPU-bbb", "name": "NVIDIA H100", "total": 80 * 2**30, "used": 0, "util": None},
    ])
    monitor = GPUMonitor(nvml)
    inv = monitor.read()
    monitor.close()
    assert inv.ids == (0, 1) and inv.reason is None and inv.driver_version == "550.54.15"
    assert inv.devices[0].name == "NVIDIA H100" and inv.devices[0].uuid == "GPU-aaa"
    assert inv.devices[0].memory_used == 2**30 and inv.devices[0].utilization == 37
    assert inv.devices[1].utilization is None  # unsupported counter, device still listed


def test_inventory_without_a_driver_says_why():
    inv = GPUMonitor(fake_nvml(None, init_error="Driver Not Loaded")).read()
    assert inv.devices == () and inv.reason == "no NVIDIA driver found (NVML: Driver Not Loaded)"
    inv = GPUMonitor(fake_nvml([])).read()
    assert inv.devices == () and inv.reason == "the NVIDIA driver reports no GPU"


def test_a_jobs_worker_holds_its_gpu_against_replicas_and_other_workers_until_released():
    from cortexd.backends.base import ReplicaInfo
    from cortexd.daemon.gpu_placer import GPUPlacer, WorkerPlacement
    from cortexd.spec.model import ComputeSpec
    from tests.builders import api_spec
    from tests.unit.reconciler_fakes import gpu_inventory

    spec = api_spec("gpu", "/proj", compute=ComputeSpec(gpu=1))
    replica = ReplicaInfo("gpu", "gpu-1", "h", "running", "127.0.0.1", 1, 0.0, gpu_ids=(0,))
    placer = GPUPlacer(lambda: gpu_inventory(2))
    workers = WorkerPlacement(placer, lambda: {"gpu-1": replica})
    assert workers.place(spec, "job-worker-1").gpu_ids == (1,)  # GPU 0 is the replica's
    assert not workers.place(spec, "job-worker-2").placed  # both held: it waits
    assert not placer.assign(spec, "gpu-2", {"gpu-1": replica}).placed  # a replica too
    workers.release("job-worker-1")
    assert workers.place(spec, "job-worker-2").gpu_ids == (1,)
