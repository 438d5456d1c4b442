"""Unhealthy replicas are replaced: hung ones the gateway reports, and ones whose /healthz
turns non-200 after they were ready. Recording fake backend and gateway, fake clock."""

from __future__ import annotations

from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import api_snapshot, settle


async def live_with(rec, backend, ready, replicas=2):
    await rec.apply([rollout_spec(replicas=replicas)])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    assert rec.apis["api"].status == "live"
    return sorted(backend.replicas)


def messages(rec):
    return [e.message for e in rec.events.recent()]


async def test_a_replica_the_gateway_finds_hung_is_drained_and_replaced_after_the_backoff(world):
    rec, backend, gateway, clock, ready = world
    hung, other = await live_with(rec, backend, ready)
    gateway.in_flight = {hung: 2}  # two requests still hang on it

    rec.replica_out_of_rotation("api", hung, "3 requests in a row timed out", replace=True)
    await settle(rec)
    state = rec.apis["api"]
    assert gateway.routable["api"] == [other]  # out of routing at once
    assert state.status == "updating"
    assert state.reason.startswith(f"replica {hung} unhealthy: 3 requests in a row timed out")
    assert any(f"replica {hung} unhealthy: 3 requests in a row timed out" in m for m in messages(rec))
    snap = api_snapshot(rec, "api", wall_now=0.0, mono_now=clock.now)
    (row,) = [r for r in snap["replica_list"] if r["id"] == hung]
    assert row["state"] == "draining" and row["health"].startswith("unhealthy: 3 requests")
    assert len(backend.replicas) == 2  # the crash backoff holds the replacement for 1 s

    clock.now += 1.1
    await settle(rec)
    assert len(backend.replicas) == 3  # the replacement starts while the hung one drains
    new = (set(backend.replicas) - {hung, other}).pop()
    ready.add(new)
    gateway.in_flight = {}  # the hung requests timed out
    await settle(rec)
    assert ("stop", hung) in backend.actions
    assert sorted(backend.replicas) == sorted([other, new])
    assert state.status == "live" and state.reason is None
    assert state.restarts == 1


async def test_a_replica_whose_healthz_fails_after_ready_is_replaced(world):
    rec, backend, gateway, clock, ready = world
    (rid,) = await live_with(rec, backend, ready, replicas=1)
    ready.discard(rid)  # /healthz answers 503 from now on (all predictor threads stuck)
    for _ in range(2):
        clock.now += 5.1  # settings.liveness_interval
        await settle(rec)
    assert rid in gateway.routable["api"]  # two failed checks: not yet
    clock.now += 5.1
    await settle(rec)
    await settle(rec)
    assert gateway.routable["api"] == []
    assert any(f"replica {rid} unhealthy: /healthz failed 3 checks in a row" in m for m in messages(rec))
    clock.now += 1.1
    await settle(rec)
    assert ("stop", rid) in backend.actions
    assert len(backend.replicas) == 1 and rid not in backend.replicas


async def test_a_healthz_check_that_passes_again_clears_the_count(world):
    rec, backend, gateway, clock, ready = world
    (rid,) = await live_with(rec, backend, ready, replicas=1)
    for step in range(6):  # fails twice, passes, fails twice, passes
        if step in (2, 5):
            ready.add(rid)
        else:
            ready.discard(rid)
        clock.now += 5.1
        await settle(rec)
    assert gateway.routable["api"] == [rid]
    assert ("stop", rid) not in backend.actions


async def test_an_ejected_replica_is_reported_not_replaced(world):
    rec, backend, gateway, clock, ready = world
    first, _ = await live_with(rec, backend, ready)
    reason = "3 connection failures in a row; out of rotation for 10s"
    rec.replica_out_of_rotation("api", first, reason, replace=False, until=clock.now + 10)
    await settle(rec)
    assert any(f"replica {first} out of rotation: {reason}" in m for m in messages(rec))
    snap = api_snapshot(rec, "api", wall_now=0.0, mono_now=clock.now)
    (row,) = [r for r in snap["replica_list"] if r["id"] == first]
    assert row["health"] == f"out of rotation: {reason}"
    assert ("stop", first) not in backend.actions
    clock.now += 11
    snap = api_snapshot(rec, "api", wall_now=0.0, mono_now=clock.now)
    (row,) = [r for r in snap["replica_list"] if r["id"] == first]
    assert row["health"] is None  # back in rotation

