"""What an HTTP client is told about an API in error: the kind of its failure, never the daemon's detail.

The reconciler gives each failure a kind (core.api_status.Failure) beside the sentence it
writes for `cortexd get`, which carries the replica's last log lines; the gateway gets the
kind only, and tells clients what it means (gateway/answers.py client_reason).
"""

from __future__ import annotations

import pytest

from cortexd.core.api_status import Failure
from cortexd.errors import BackendError, DependencyError
from cortexd.gateway.answers import CLIENT_REASONS, client_reason
from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import settle

SECRET = "password=hunter2 postgres://admin:hunter2@db/prod"


def test_every_kind_has_a_sentence_for_clients_and_none_carries_a_detail():
    assert set(CLIENT_REASONS) == set(Failure)
    for kind in Failure:
        said = client_reason("api", kind)
        assert said == f"the API is not ready: {CLIENT_REASONS[kind]}; see `cortexd get api`"


@pytest.mark.parametrize("kind, why", [
    (Failure.CRASHED, "its predictor failed to start"),
    (Failure.DEPENDENCIES, "its dependencies could not be installed"),
    (Failure.UNHEALTHY, "its replicas stopped answering and are being replaced"),
    (Failure.OOM, "its predictor ran out of memory"),
    (Failure.NOT_READY, "its predictor did not become ready in time"),
    (Failure.IMAGE, "its replica image could not be prepared"),
    (Failure.START, "its replicas could not be started"),
    (Failure.INTERNAL, "the daemon could not reconcile it"),
])
def test_a_client_gets_the_category(kind, why):
    assert client_reason("api", kind) == f"the API is not ready: {why}; see `cortexd get api`"


async def in_error(rec, clock, spec, rounds: int = 3):
    """Settle `rounds` times past the backoff: enough failures in a row to show `error`."""
    for _ in range(rounds):
        await settle(rec)
        clock.now += 400  # past the backoff (and the start timeout)
    await settle(rec)
    return rec.apis[spec.name]


async def test_a_crashed_predictor_is_a_crash_to_clients_and_its_logs_stay_in_get(world):
    rec, backend, gateway, clock, ready = world
    spec = rollout_spec()

    async def logs(replica_id, tail=None):
        return [f"connecting with {SECRET}", "Traceback (most recent call last):"]

    backend.logs = logs
    await rec.apply([spec])
    for _ in range(3):
        await settle(rec)
        for rid in list(backend.replicas):
            backend.crash(rid)
        await settle(rec)
        clock.now += 400
    await settle(rec)
    state = rec.apis["api"]
    assert state.status == "error" and "hunter2" in state.reason  # the operator's: `cortexd get`
    assert state.failure is Failure.CRASHED
    assert gateway.states["api"] == (False, Failure.CRASHED)  # all the gateway gets
    assert "hunter2" not in client_reason("api", Failure.CRASHED)


@pytest.mark.parametrize("error, kind", [
    (DependencyError("six==0.0.999 (requirements.txt line 2) cannot be installed on Python 3.11: ...",
                     deterministic=True), Failure.DEPENDENCIES),
    (DependencyError("conda-packages.txt needs conda, mamba or micromamba on PATH", deterministic=True),
     Failure.DEPENDENCIES),
    (BackendError("building the image of api 'api' failed at Step 3"), Failure.IMAGE),
])
async def test_what_preparing_a_replica_fails_with_is_that_kind(world, error, kind):
    rec, backend, gateway, clock, ready = world

    async def ensure_image(spec):
        raise error

    backend.ensure_image = ensure_image
    spec = rollout_spec()
    await rec.apply([spec])
    state = await in_error(rec, clock, spec)
    assert state.status == "error" and state.failure is kind
    assert gateway.states["api"] == (False, kind)


@pytest.mark.parametrize("error, kind", [
    (DependencyError("cannot create a Python environment in /var/cache/cortexd/envs/x: disk full"),
     Failure.DEPENDENCIES),
    (BackendError("could not start a replica of api 'api': no such interpreter"), Failure.START),
])
async def test_what_starting_a_replica_fails_with_is_that_kind(world, error, kind):
    rec, backend, gateway, clock, ready = world

    async def start(spec, replica_id, gpu_ids=()):
        raise error

    backend.start = start
    spec = rollout_spec()
    await rec.apply([spec])
    state = await in_error(rec, clock, spec)
    assert state.status == "error" and state.failure is kind
    assert gateway.states["api"] == (False, kind)


async def test_a_replica_never_ready_in_time_is_not_ready(world):
    rec, backend, gateway, clock, ready = world
    spec = rollout_spec()
    await rec.apply([spec])
    state = await in_error(rec, clock, spec, rounds=6)  # each start times out one round later
    assert state.status == "error" and state.failure is Failure.NOT_READY
    assert "did not become ready within" in state.reason


async def test_a_hung_replica_is_unhealthy_while_it_is_replaced(world):
    rec, backend, gateway, clock, ready = world
    await rec.apply([rollout_spec(replicas=2)])
    await settle(rec)
    ready.update(backend.replicas)
    await settle(rec)
    hung = sorted(backend.replicas)[0]
    rec.replica_out_of_rotation("api", hung, "3 requests in a row timed out", replace=True)
    await settle(rec)
    state = rec.apis["api"]
    assert state.status == "updating" and state.failure is Failure.UNHEALTHY


async def test_an_internal_error_reconciling_an_api_is_internal(world):
    rec, backend, gateway, clock, ready = world

    async def start(spec, replica_id, gpu_ids=()):
        raise RuntimeError("a bug")

    backend.start = start
    spec = rollout_spec()
    await rec.apply([spec])
    state = await in_error(rec, clock, spec)
    assert state.status == "error" and state.failure is Failure.INTERNAL
