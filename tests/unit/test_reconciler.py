"""The reconciler against a recording fake backend and gateway, on a fake clock.

These assert what a user would see: replica counts, which replicas are routable,
the API's status and reason, restarts with backoff. The fakes: tests/unit/reconciler_fakes.py;
the `world` fixture: tests/unit/conftest.py.
"""

from __future__ import annotations

import asyncio
import dataclasses

from cortexd.core.api_status import Failure
from cortexd.daemon.events import EventLog
from cortexd.daemon.gpu_placer import GPUPlacer
from cortexd.daemon.reconciler import Reconciler
from cortexd.settings import DaemonSettings
from cortexd.spec.model import (
    APISpec,
    ComputeSpec,
)
from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway, gpu_inventory, settle


async def test_deploy_starts_init_replicas_and_goes_live_when_ready(world):
    rec, backend, gateway, clock, ready = world
    spec = rollout_spec(replicas=2)
    await rec.apply([spec])
    await settle(rec)
    assert len(backend.of(spec)) == 2
    assert rec.apis["api"].status == "updating"
    assert gateway.routable["api"] == []
    assert gateway.states["api"] == (True, None)  # requests wait: the API is starting

    ready.update(backend.replicas)
    await settle(rec)
    assert rec.apis["api"].status == "live"
    assert gateway.routable["api"] == sorted(backend.replicas)
    assert gateway.states["api"] == (False, None)


async def test_crashed_replica_is_restarted_with_backoff_then_error_with_logs(world):
    rec, backend, gateway, clock, ready = world
    spec = rollout_spec()
    await rec.apply([spec])
    await settle(rec)
    (first,) = backend.replicas
    backend.crash(first)
    await settle(rec)
    assert ("stop", first) in backend.actions
    assert backend.replicas == {}  # backoff: not restarted at once
    clock.now += 1.1
    await settle(rec)
    assert len(backend.replicas) == 1

    for _ in range(2):  # two more crashes: 3 in a row
        (rid,) = backend.replicas
        backend.crash(rid)
        await settle(rec)
        clock.now += 10
        await settle(rec)
    state = rec.apis["api"]
    assert state.status == "error"
    assert "exited with code 1" in state.reason
    assert "RuntimeError: model file missing" in state.reason
    # no replica is routable: requests are refused at once with the kind of the reason
    starting, failure = gateway.states["api"]
    assert not starting and failure is Failure.CRASHED and state.failure is Failure.CRASHED

    # a replica of this spec becoming ready clears the error
    (rid,) = backend.replicas
    ready.add(rid)
    await settle(rec)
    assert rec.apis["api"].status == "live"
    assert rec.apis["api"].reason is None


async def test_an_oom_kill_shows_out_of_memory_at_once(world):
    rec, backend, gateway, clock, ready = world
    await rec.apply([rollout_spec()])
    await settle(rec)
    (rid,) = backend.replicas
    backend.crash(rid, code=137, oom=True)
    await settle(rec)
    assert rec.apis["api"].status == "error"
    assert rec.apis["api"].reason.startswith("error (out of memory)")
    # at once, with its kind: all the gateway gets (tests/unit/test_client_reason.py)
    assert rec.apis["api"].failure is Failure.OOM
    assert gateway.states["api"] == (False, Failure.OOM)


async def test_changed_spec_rolls_without_losing_ready_capacity(world):
    rec, backend, gateway, clock, ready = world
    old = rollout_spec(replicas=2, max_surge=1, max_unavailable=0)
    await rec.apply([old])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    old_ids = set(backend.replicas)

    new = rollout_spec(replicas=2, config={"v": 2}, max_surge=1, max_unavailable=0)
    await rec.apply([new])
    for _ in range(20):
        await settle(rec, passes=1)
        # zero downtime: at least 2 routable replicas at every step
        assert len(gateway.routable["api"]) >= 2
        ready.update(backend.replicas)
    assert set(backend.replicas).isdisjoint(old_ids)
    assert len(backend.of(new)) == 2
    assert rec.apis["api"].status == "live"


async def test_new_version_that_never_gets_ready_keeps_old_serving(world):
    rec, backend, gateway, clock, ready = world
    old = rollout_spec(replicas=1, max_surge=1, max_unavailable=0)
    await rec.apply([old])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    (old_id,) = backend.replicas

    await rec.apply([rollout_spec(replicas=1, config={"broken": True}, max_surge=1, max_unavailable=0)])
    for _ in range(8):  # each round: a new replica starts, then crashes
        await settle(rec)
        for rid in list(backend.replicas):
            if rid != old_id and backend.replicas[rid].state == "running":
                backend.crash(rid)
        clock.now += 10
    assert gateway.routable["api"] == [old_id]
    assert rec.apis["api"].status == "error"


async def test_draining_replica_stops_only_when_idle(world):
    rec, backend, gateway, clock, ready = world
    spec = rollout_spec(replicas=2)
    await rec.apply([spec])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    victim = sorted(backend.replicas)[0]
    gateway.in_flight = {rid: 1 for rid in backend.replicas}
    rec.set_desired("api", 1)
    await settle(rec)
    assert len(gateway.routable["api"]) == 1  # one is draining: no new requests
    assert len(backend.replicas) == 2  # but not stopped while it has a request in flight
    gateway.in_flight = {}
    await settle(rec)
    assert len(backend.replicas) == 1
    assert victim in backend.replicas or len(gateway.routable["api"]) == 1


async def test_removed_api_is_stopped_and_other_api_untouched(world):
    rec, backend, gateway, clock, ready = world
    a, b = rollout_spec("a"), rollout_spec("b")
    await rec.apply([a, b])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    b_ids = {r.replica_id for r in backend.replicas.values() if r.api == "b"}
    await rec.apply([b])
    await settle(rec)
    assert {r.api for r in backend.replicas.values()} == {"b"}
    assert {r.replica_id for r in backend.replicas.values()} == b_ids
    assert "a" not in rec.apis


async def test_gpu_api_on_a_daemon_without_gpus_is_in_error_at_once(world):
    rec, backend, gateway, clock, ready = world  # no placer: no GPU is available to this daemon
    spec = dataclasses.replace(rollout_spec(), compute=ComputeSpec(gpu=1))
    await rec.apply([spec])
    await settle(rec)
    assert backend.replicas == {}
    state = rec.apis["api"]
    assert (state.status, state.failure) == ("error", Failure.NO_GPU_ON_HOST)
    assert "requests compute.gpu: 1, but this host has no NVIDIA GPU" in state.reason
    # requests are told the kind at once, not that it waits for a free GPU
    assert gateway.states["api"] == (False, Failure.NO_GPU_ON_HOST) and gateway.waiting["api"] is None


def OneGPU() -> GPUPlacer:
    """The placer of a host with one GPU (a fake NVML inventory): a replica gets it when no live
    replica holds it."""
    return GPUPlacer(lambda: gpu_inventory(1))


class GPUBackend(FakeBackend):
    async def start(self, spec, replica_id, gpu_ids=()):
        info = await super().start(spec, replica_id, gpu_ids)
        info = dataclasses.replace(info, gpu_ids=tuple(gpu_ids))
        self.replicas[replica_id] = info
        return info


def gpu_spec(config=None) -> APISpec:
    spec = rollout_spec(replicas=1, config=config)  # default update strategy: surge 25% -> 1
    return dataclasses.replace(spec, compute=ComputeSpec(gpu=1),
                               raw={**spec.raw, "gpu": 1})


async def test_update_on_a_host_whose_gpus_are_all_held_drains_an_old_replica_first():
    clock, gateway, backend = FakeClock(), FakeGateway(), GPUBackend()
    ready: set[str] = set()

    async def probe(info):
        return info.replica_id in ready

    rec = Reconciler(backend, gateway, DaemonSettings(drain_timeout=5.0), EventLog(clock),
                     clock=clock, probe=probe, placer=OneGPU())
    old = gpu_spec()
    await rec.apply([old])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    (old_id,) = backend.replicas
    assert backend.replicas[old_id].gpu_ids == (0,)

    new = gpu_spec(config={"v": 2})
    await rec.apply([new])
    for _ in range(6):
        await settle(rec)
        ready.update(backend.replicas)
    # the old replica gave its GPU up; the new version holds it and serves
    assert old_id not in backend.replicas
    (new_id,) = backend.replicas
    assert backend.replicas[new_id].spec_hash == new.spec_hash
    assert backend.replicas[new_id].gpu_ids == (0,)
    assert rec.apis["api"].status == "live"


async def test_scale_up_without_free_gpu_waits_and_drains_nothing():
    clock, gateway, backend = FakeClock(), FakeGateway(), GPUBackend()
    rec = Reconciler(backend, gateway, DaemonSettings(), EventLog(clock), clock=clock,
                     probe=lambda info: asyncio.sleep(0, True), placer=OneGPU())
    await rec.apply([gpu_spec()])
    await settle(rec)
    rec.set_desired("api", 2)
    await settle(rec)
    assert len(backend.replicas) == 1
    assert not any(r.draining_since for r in rec.records.values())
    assert "insufficient GPU" in rec.apis["api"].pending_reason


async def test_requests_wait_for_a_replica_on_its_way_not_for_a_gpu_nobody_frees():
    clock, gateway, backend = FakeClock(), FakeGateway(), GPUBackend()
    ready: set[str] = set()
    rec = Reconciler(backend, gateway, DaemonSettings(), EventLog(clock), clock=clock,
                     probe=lambda info: asyncio.sleep(0, info.replica_id in ready), placer=OneGPU())
    await rec.apply([dataclasses.replace(gpu_spec(), autoscaling=dataclasses.replace(
        gpu_spec().autoscaling, init_replicas=2, min_replicas=2, max_replicas=2))])
    await settle(rec)
    assert len(backend.replicas) == 1  # the second waits for the GPU the first holds
    assert gateway.states["api"] == (True, None) and gateway.waiting["api"] is None  # the first is coming
    (first,) = backend.replicas
    backend.crash(first)
    backend.replicas.pop(first)  # gone, and its GPU with it; the crash backoff holds the next start
    await settle(rec)
    assert gateway.waiting["api"] is None  # a backoff is not a GPU wait


async def test_a_rollout_drain_waits_as_long_as_the_gateway_lets_a_request_run(world):
    rec, backend, gateway, clock, ready = world  # drain_timeout 5 s, upstream_timeout 60 s
    await rec.apply([rollout_spec(replicas=2)])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    gateway.in_flight = {rid: 1 for rid in backend.replicas}  # a long request on each
    rec.set_desired("api", 1)
    await settle(rec)
    clock.now += 30  # past drain_timeout, within upstream_timeout: still draining
    await settle(rec)
    assert len(backend.replicas) == 2
    clock.now += 31
    await settle(rec)
    assert len(backend.replicas) == 1


async def test_one_api_failing_to_start_does_not_stall_the_others(world):
    rec, backend, gateway, clock, ready = world
    original = backend.start

    async def start(spec, replica_id, gpu_ids=()):
        if spec.name == "broken":
            raise OSError(28, "No space left on device")
        return await original(spec, replica_id, gpu_ids)

    backend.start = start
    await rec.apply([rollout_spec(name="broken"), rollout_spec(name="fine")])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    assert rec.apis["fine"].status == "live"
    assert [e.message for e in rec.events.recent() if e.api == "broken" and "No space" in e.message]
