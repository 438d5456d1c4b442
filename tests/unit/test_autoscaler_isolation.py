"""The autoscaler loop decides each API on its own: one API's broken configuration (here
max_upscale_factor: .inf, which makes Cortex's arithmetic raise OverflowError) keeps that
API at its count, says why, is logged once, and the other APIs still scale."""

from __future__ import annotations

import dataclasses
import logging

from cortexd.daemon.autoscaler import Autoscaler
from cortexd.daemon.seams import ScaledAPI
from tests.builders import rollout_spec

NO_STAB = {"downscale_stabilization_period": 0.0, "upscale_stabilization_period": 0.0}


@dataclasses.dataclass
class API:
    spec: object
    desired: int
    deployed_at: float = 0.0
    last_decision: str | None = None


class Reconciler:
    """The autoscaler's whole view of the reconciler (cortexd.daemon.seams.ScalingTarget)."""

    def __init__(self, apis):
        self.apis = apis

    def scaled_apis(self):
        return {n: ScaledAPI(a.spec, a.desired, a.deployed_at) for n, a in self.apis.items()}

    def ready_replicas(self, apis):
        return {}  # these APIs scale on in-flight requests: no CPU readings

    async def cpu_seconds(self, replica_ids):
        return {}

    def set_desired(self, api, count, decision=None):
        self.apis[api].desired = count
        self.apis[api].last_decision = decision

    def note_decision(self, api, decision):
        self.apis[api].last_decision = decision


class Gateway:
    def __init__(self, in_flight):
        self.in_flight = in_flight

    def api_in_flight(self, api):
        return self.in_flight[api]


def api(name, **autoscaling):
    spec = rollout_spec(name=name)
    scaling = dataclasses.replace(spec.autoscaling, **NO_STAB, **autoscaling)
    return API(dataclasses.replace(spec, autoscaling=scaling), desired=1)


def run(scaler, seconds, start=0.0):
    now = start
    for _ in range(seconds):
        now += 1.0
        scaler.sample(now)
        if int(now) % 10 == 0:
            scaler.decide(now)
    return now


def test_an_api_whose_decision_raises_keeps_its_count_and_the_others_scale(caplog):
    apis = {"broken": api("broken", max_upscale_factor=float("inf")), "busy": api("busy")}
    reconciler = Reconciler(apis)
    # both under load: 4 requests in flight on 1 replica each (target concurrency 1)
    scaler = Autoscaler(reconciler, Gateway({"broken": 4, "busy": 4}))
    with caplog.at_level(logging.ERROR, logger="cortexd.autoscaler"):
        run(scaler, 60)
    assert apis["busy"].desired > 1  # scaled up despite its neighbour
    assert apis["broken"].desired == 1
    assert "OverflowError" in apis["broken"].last_decision
    assert "keeping 1 replica(s)" in apis["broken"].last_decision
    errors = [r for r in caplog.records if "broken" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # once, not every tick


def test_an_api_whose_sampling_raises_does_not_stop_the_others(caplog):
    class Exploding:
        def __getattr__(self, name):
            raise ValueError(f"bad autoscaling field {name}")

    broken = api("broken")
    broken.spec = dataclasses.replace(broken.spec, autoscaling=Exploding())
    apis = {"broken": broken, "busy": api("busy")}
    scaler = Autoscaler(Reconciler(apis), Gateway({"broken": 4, "busy": 4}))
    with caplog.at_level(logging.ERROR, logger="cortexd.autoscaler"):
        run(scaler, 30)
    assert apis["busy"].desired > 1
    assert apis["broken"].desired == 1
    assert "ValueError: bad autoscaling field" in apis["broken"].last_decision
    logged = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert logged and len(logged) == len(set(logged))  # each distinct error once, over 3 ticks


def test_a_fixed_configuration_scales_again():
    apis = {"a": api("a", max_upscale_factor=float("inf"))}
    reconciler = Reconciler(apis)
    scaler = Autoscaler(reconciler, Gateway({"a": 4}))
    now = run(scaler, 20)
    assert apis["a"].desired == 1
    apis["a"].spec = api("a").spec
    run(scaler, 20, start=now)
    assert apis["a"].desired > 1
    assert "autoscaling failed" not in apis["a"].last_decision
