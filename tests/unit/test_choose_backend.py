"""Backend choice (auto falls back to processes with a notice) and the reconciler's GPU placer."""

from __future__ import annotations

import pytest

from cortexd.backends.base import ReplicaInfo
from cortexd.backends.process import ProcessBackend
from cortexd.core.placement import Placement
from cortexd.daemon.backend_choice import choose_backend
from cortexd.daemon.events import EventLog
from cortexd.daemon.gpu_placer import GPUPlacer
from cortexd.errors import BackendUnavailable
from cortexd.nvml import GPUDevice, GPUInventory
from cortexd.settings import DaemonSettings
from tests.builders import make_spec


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")


async def test_auto_without_engine_falls_back_to_processes_with_a_notice(no_engine, tmp_path):
    events = EventLog(lambda: 0.0)
    backend = await choose_backend(DaemonSettings(home=tmp_path, backend="auto"), events)
    assert isinstance(backend, ProcessBackend)
    (notice,) = events.recent()
    assert notice.level == "warning"
    assert "no-docker.sock" in notice.message and "using the process backend" in notice.message


async def test_docker_without_engine_is_refused_with_the_reason(no_engine, tmp_path):
    with pytest.raises(BackendUnavailable, match=r"no-docker\.sock"):
        await choose_backend(DaemonSettings(home=tmp_path, backend="docker"), EventLog(lambda: 0.0))


async def test_unknown_backend_is_refused(tmp_path):
    with pytest.raises(BackendUnavailable, match="choose auto, process or docker"):
        await choose_backend(DaemonSettings(home=tmp_path, backend="kubernetes"), EventLog(lambda: 0.0))


def gpus(n: int) -> GPUInventory:
    return GPUInventory(devices=tuple(GPUDevice(i, f"GPU-{i}", "H100", 80 << 30, 0, 0) for i in range(n)))


def replica(rid: str, ids: tuple[int, ...], state: str = "running") -> ReplicaInfo:
    return ReplicaInfo("a", rid, "h", state, "127.0.0.1", 1, 0.0, gpu_ids=ids)


def test_placer_gives_free_ids_and_ignores_exited_replicas(tmp_path):
    placer = GPUPlacer(lambda: gpus(2))
    spec = make_spec(tmp_path, gpu=1)
    assert placer.assign(spec, "new", {}) == Placement((0,))
    held = {"r1": replica("r1", (0,)), "dead": replica("dead", (1,), state="exited")}
    assert placer.assign(spec, "new", held) == Placement((1,))
    taken = placer.assign(spec, "new", {"r1": replica("r1", (0,)), "r2": replica("r2", (1,))})
    assert taken.gpu_ids == () and not taken.none_on_host  # all taken: it waits
    assert taken.pending == "pending: insufficient GPU (api 'echo' needs 1, 0 free of 2)"


def test_placer_without_gpus_names_the_api_and_the_cause(tmp_path):
    placer = GPUPlacer(lambda: GPUInventory(reason="no NVIDIA driver found (NVML: Driver Not Loaded)"))
    none = placer.assign(make_spec(tmp_path, gpu=2), "new", {})
    assert none.gpu_ids == () and none.none_on_host  # none at all: nothing will free one
    assert none.host_reason == "no NVIDIA driver found (NVML: Driver Not Loaded)"
    assert none.pending == ("pending: api 'echo' needs 2 GPUs, but there is no NVIDIA GPU on this host "
                            "(no NVIDIA driver found (NVML: Driver Not Loaded))")


def test_placer_rereads_the_inventory_after_refresh(tmp_path):
    now = [0.0]
    inventories = [GPUInventory(reason="driver not loaded"), gpus(1)]
    placer = GPUPlacer(lambda: inventories.pop(0), refresh=5, clock=lambda: now[0])
    spec = make_spec(tmp_path, gpu=1)
    assert placer.assign(spec, "x", {}).none_on_host
    now[0] = 4.9
    assert placer.assign(spec, "x", {}).none_on_host
    now[0] = 5.0
    assert placer.assign(spec, "x", {}) == Placement((0,))
