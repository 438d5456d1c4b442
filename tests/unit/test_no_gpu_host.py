"""`compute.gpu` on a host without a GPU: `error` at once with what to do, not a wait for a free GPU
that never comes; and `--cpu-only`, which serves such APIs on the CPU and says so.

The host is faked at NVML (cortexd.nvml.GPUMonitor reading a stand-in for pynvml), the
replicas at the backend seam (tests/unit/reconciler_fakes.py).
"""

from __future__ import annotations

import dataclasses
import types
from io import StringIO

from rich.console import Console

from cortexd.backends.image_plans import variant_of
from cortexd.cli import build_parser
from cortexd.core.api_status import Failure
from cortexd.core.placement import gpu_notices
from cortexd.daemon.events import EventLog
from cortexd.daemon.gpu_placer import GPUPlacer
from cortexd.daemon.projects import load_project, reload_projects
from cortexd.daemon.reconciler import Reconciler
from cortexd.gateway.answers import client_reason
from cortexd.nvml import GPUMonitor
from cortexd.settings import DaemonSettings, configured
from cortexd.spec.model import ComputeSpec
from cortexd.status import DaemonStatus, GPUStatus, Status, build_status
from cortexd.ui.text import api_detail
from cortexd.ui.view import status_view
from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway, gpu_inventory, settle

NO_LIBRARY = "NVML Shared Library Not Found"
ON_CPU = "compute.gpu: 1 requested; running on CPU (--cpu-only): this host has no GPU"


def nvml_without_driver() -> types.SimpleNamespace:
    """pynvml on a host without the NVIDIA driver: nvmlInit fails."""
    def init() -> None:
        raise RuntimeError(NO_LIBRARY)

    return types.SimpleNamespace(nvmlInit=init)


def gpu_spec(cpu_only: bool = False):
    spec = rollout_spec()
    return dataclasses.replace(spec, compute=ComputeSpec(gpu=1), raw={**spec.raw, "gpu": 1}, cpu_only=cpu_only)


class RecordingBackend(FakeBackend):
    """Records the GPU ids each replica is started with."""

    async def start(self, spec, replica_id, gpu_ids=()):
        self.actions.append(("gpus", ",".join(map(str, gpu_ids))))
        info = dataclasses.replace(await super().start(spec, replica_id, gpu_ids), gpu_ids=tuple(gpu_ids))
        self.replicas[replica_id] = info
        return info


async def never_ready(info) -> bool:
    return False


def world(read=None):
    """A reconciler on a host whose NVML `read` gives the inventory (default: no driver)."""
    clock, gateway, backend = FakeClock(), FakeGateway(), RecordingBackend()
    placer = GPUPlacer(read or GPUMonitor(nvml_without_driver()).read, clock=clock)
    rec = Reconciler(backend, gateway, DaemonSettings(), EventLog(clock), clock=clock, placer=placer,
                     probe=never_ready)
    return rec, backend, gateway, clock, placer


def snapshot(rec, gpus: GPUStatus) -> Status:
    daemon = DaemonStatus("0", 1, "fake", None, "127.0.0.1", 1.0, (), None, (), None)
    return build_status(daemon, rec.api_facts(), rec.replica_facts(), {n: rec.traffic(n) for n in rec.apis}, [],
                        gpus, urls={}, preparing={}, wall_now=0.0, mono_now=rec.clock())


async def test_a_gpu_api_on_a_host_without_gpus_is_in_error_at_once_saying_what_to_do():
    rec, backend, gateway, clock, _ = world()
    await rec.apply([gpu_spec()])
    await settle(rec)
    state = rec.apis["api"]
    assert (state.status, state.failure) == ("error", Failure.NO_GPU_ON_HOST)
    assert state.reason == (
        f"api 'api' requests compute.gpu: 1, but this host has no NVIDIA GPU: no NVIDIA driver found (NVML: "
        f"{NO_LIBRARY}); remove compute.gpu from its configuration (or set it to 0), or serve it on the CPU "
        "for local work with `cortexd up --cpu-only` or `cortexd deploy --cpu-only`")
    # nothing was prepared or started for it, and no restart backoff runs
    assert backend.actions == [] and state.restarts == 0 and state.next_start_at == 0.0
    # clients are told at once, by the kind, not that it waits for a free GPU
    assert gateway.states["api"] == (False, Failure.NO_GPU_ON_HOST) and gateway.waiting["api"] is None
    said = client_reason("api", Failure.NO_GPU_ON_HOST)
    assert "this host has no GPU" in said and "--cpu-only" in said
    # said once, however many passes see it
    clock.now += 60
    await settle(rec, passes=5)
    assert sum("no NVIDIA GPU" in e.message for e in rec.events.recent(50)) == 1


async def test_gpus_that_are_all_taken_are_a_wait_not_an_error():
    rec, backend, gateway, clock, _ = world(lambda: gpu_inventory(1))
    await rec.apply([gpu_spec()])
    await settle(rec)
    rec.set_desired("api", 2)
    await settle(rec)
    state = rec.apis["api"]
    assert state.status == "updating" and state.failure is None and state.pending is Failure.NO_GPU
    assert "insufficient GPU" in state.pending_reason


async def test_a_gpu_that_appears_ends_the_error():
    inventories = {"now": gpu_inventory(0, reason="no NVIDIA driver found")}
    rec, backend, gateway, clock, _ = world(lambda: inventories["now"])
    await rec.apply([gpu_spec()])
    await settle(rec)
    assert rec.apis["api"].status == "error"
    inventories["now"] = gpu_inventory(1)
    clock.now += 5  # the placer re-reads the inventory every 5 s
    await settle(rec)
    assert len(backend.replicas) == 1 and ("gpus", "0") in backend.actions
    assert rec.apis["api"].status == "updating" and rec.apis["api"].failure is None


async def test_cpu_only_serves_a_gpu_api_without_placing_a_gpu_and_says_so():
    rec, backend, gateway, clock, placer = world()
    await rec.apply([gpu_spec(cpu_only=True)])
    await settle(rec)
    assert ("gpus", "") in backend.actions and len(backend.replicas) == 1  # started, with no GPU
    assert rec.apis["api"].status == "updating" and rec.apis["api"].failure is None

    snap = snapshot(rec, GPUStatus.of(placer.inventory()))
    (api,) = snap.apis
    assert api.gpu_note == ON_CPU
    assert ON_CPU in api_detail(api).splitlines()  # `cortexd get api`: a line of its own
    console = Console(file=StringIO(), width=200, color_system=None)
    console.print(status_view(snap, 0.0))
    assert f"compute {ON_CPU}" in " ".join(console.file.getvalue().split())  # the live view
    # on a host with a GPU it is on the CPU all the same, and says only that
    snap = snapshot(rec, GPUStatus.of(gpu_inventory(1)))
    assert snap.apis[0].gpu_note == "compute.gpu: 1 requested; running on CPU (--cpu-only)"


def test_cpu_only_is_a_version_of_its_own_and_a_cpu_image():
    assert gpu_spec(cpu_only=True).spec_hash != gpu_spec().spec_hash
    assert gpu_spec(cpu_only=True).replica_gpus == 0 and gpu_spec().replica_gpus == 1
    assert variant_of(gpu_spec(cpu_only=True)) == ("python", "cpu")
    assert variant_of(gpu_spec()) == ("python", "gpu")


def test_up_and_deploy_say_at_once_what_becomes_of_gpu_apis():
    plain, on_cpu = gpu_spec(), gpu_spec(cpu_only=True)
    assert gpu_notices([rollout_spec()], 0, "no driver", "--cpu-only") == []
    (said,) = gpu_notices([plain], 0, "no driver", "--cpu-only")
    assert said.startswith("api 'api' requests compute.gpu: 1, but this host has no NVIDIA GPU: no driver; remove")
    assert gpu_notices([plain], 2, None, "--cpu-only") == []  # it gets one
    assert gpu_notices([on_cpu], 0, "no driver", "--cpu-only") == [f"api 'api': {ON_CPU}"]
    assert gpu_notices([plain], 0, "no driver", "--cpu-only", cpu_only=True) == [f"api 'api': {ON_CPU}"]


GPU_PROJECT = """\
- name: gpu-api
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
  compute: {gpu: 1}
- name: cpu-api
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
  networking: {endpoint: /cpu}
"""


def test_a_project_deployed_cpu_only_keeps_it_across_reloads_and_only_its_gpu_apis_change(tmp_path):
    (tmp_path / "cortex.yaml").write_text(GPU_PROJECT)
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    plain = load_project(str(tmp_path))
    on_cpu = load_project(str(tmp_path), cpu_only=True)
    assert [s.cpu_only for s in on_cpu.specs] == [True, False]
    assert on_cpu.specs[0].spec_hash != plain.specs[0].spec_hash
    assert on_cpu.specs[1].spec_hash == plain.specs[1].spec_hash  # a CPU API does not roll
    (reloaded,), problems = reload_projects([on_cpu])
    assert problems == [] and [s.cpu_only for s in reloaded.specs] == [True, False]


def test_the_switch_is_one_option_for_up_deploy_and_the_environment():
    parser = build_parser()
    assert parser.parse_args(["up", "--cpu-only"]).cpu_only is True
    assert parser.parse_args(["deploy", "--cpu-only", "p"]).cpu_only is True
    assert configured({}, {"CORTEXD_CPU_ONLY": "1"}).cpu_only is True
    assert configured({}, {}).cpu_only is False
