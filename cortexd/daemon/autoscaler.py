"""The autoscaler loop: samples in-flight requests at the gateway, ticks core.autoscale.

Every settings.sample_interval seconds it records each API's in-flight count (a
ring buffer covering the API's `window`); every settings.autoscale_tick seconds
it calls core.autoscale.decide and writes the request as the API's desired
replica count, which the reconciler converges to. The decision's reason is kept
on the API (shown by `cortexd get`) and logged when the count changes.

Legacy `kind: api` APIs declare target_cpu_utilization and scale on CPU instead
(the Kubernetes HPA rule, core.autoscale.cpu_decide): every sample reads the CPU
time each ready replica used since the previous sample (backend.cpu_seconds:
/proc for processes, cgroup stats for containers) and records the replicas' mean
use in percent of `compute.cpu`, as HPA's utilization is relative to the request.

Each API is sampled and decided on its own: an API whose decision raises (a
configuration the arithmetic cannot take, such as an infinite max_upscale_factor)
keeps its replica count and shows the error as its last decision, logged once per
distinct error, while the other APIs go on scaling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from cortexd.core import autoscale
from cortexd.daemon.seams import InFlight, ScaledAPI, ScalingTarget

log = logging.getLogger("cortexd.autoscaler")


class Autoscaler:
    def __init__(self, reconciler: ScalingTarget, gateway: InFlight, *, sample_interval: float = 1.0,
                 tick: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.reconciler = reconciler
        self.gateway = gateway
        self.sample_interval = sample_interval
        self.tick = tick
        self.clock = clock
        self._samples: dict[str, deque[autoscale.Sample]] = {}
        self._states: dict[str, autoscale.AutoscalerState] = {}
        self._deployed: dict[str, float] = {}
        self._cpu_samples: dict[str, deque[autoscale.CpuSample]] = {}
        self._cpu_last: dict[str, tuple[float, float]] = {}  # replica id -> (at, cpu seconds)
        # (api, "sample" or "decide") -> the error last logged, so each is logged once
        self._errors: dict[tuple[str, str], str] = {}

    def sample(self, now: float) -> None:
        apis = self.reconciler.scaled_apis()
        for name, api in apis.items():
            try:
                if self._deployed.get(name) != api.deployed_at:
                    # (re)deployed: history starts over, as Cortex's does
                    self._states[name] = autoscale.AutoscalerState()
                    self._samples[name] = deque(
                        maxlen=autoscale.samples_to_keep(api.spec.autoscaling, self.sample_interval))
                    self._cpu_samples[name] = deque(maxlen=self._samples[name].maxlen)
                    self._deployed[name] = api.deployed_at
                self._samples[name].append(autoscale.Sample(now, self.gateway.api_in_flight(name)))
            except Exception as e:  # this API's configuration; the others are sampled
                self._failed(name, api, "sample", e)
            else:
                self._errors.pop((name, "sample"), None)
        for name in list(self._deployed):
            if name not in apis:
                for table in (self._samples, self._states, self._deployed, self._cpu_samples):
                    table.pop(name, None)
                for phase in ("sample", "decide"):
                    self._errors.pop((name, phase), None)

    async def sample_cpu(self, now: float) -> None:
        """One CPU sample for each API that scales on target_cpu_utilization."""
        apis = {name: api for name, api in self.reconciler.scaled_apis().items()
                if api.spec.autoscaling.target_cpu_utilization is not None and api.spec.compute.cpu > 0}
        ready = self.reconciler.ready_replicas(apis)
        if not ready:
            self._cpu_last.clear()
            return
        used = await self.reconciler.cpu_seconds(list(ready))
        per_api: dict[str, list[float]] = {}
        for rid, seconds in used.items():
            last = self._cpu_last.get(rid)
            self._cpu_last[rid] = (now, seconds)
            if last is None or now <= last[0]:
                continue  # first sight of this replica: a rate needs two readings
            rate = max(0.0, seconds - last[1]) / (now - last[0])
            request = apis[ready[rid]].spec.compute.cpu
            per_api.setdefault(ready[rid], []).append(100.0 * rate / request)
        for rid in [r for r in self._cpu_last if r not in ready]:
            self._cpu_last.pop(rid)
        for name, values in per_api.items():
            if name in self._cpu_samples:
                self._cpu_samples[name].append(autoscale.CpuSample(now, sum(values) / len(values)))

    def decide(self, now: float) -> None:
        for name, api in self.reconciler.scaled_apis().items():
            try:
                self._decide_api(name, api, now)
            except Exception as e:  # this API keeps its count; the others go on
                self._failed(name, api, "decide", e)
            else:
                self._errors.pop((name, "decide"), None)

    def _decide_api(self, name: str, api: ScaledAPI, now: float) -> None:
        spec = api.spec.autoscaling
        state = self._states.get(name, autoscale.AutoscalerState())
        if spec.target_cpu_utilization is not None:
            if api.spec.compute.cpu <= 0:
                self.reconciler.note_decision(
                    name, "target_cpu_utilization needs compute.cpu (the request utilization is "
                          f"relative to); keeping {api.desired} replica(s)")
                return
            decision, new_state = autoscale.cpu_decide(
                spec, self._cpu_samples.get(name, ()), state, api.desired, api.deployed_at, now)
        else:
            decision, new_state = autoscale.decide(
                spec, self._samples.get(name, ()), state, api.desired, api.deployed_at, now)
        self._states[name] = new_state
        if decision.changed:
            log.info("[%s] autoscaler: %s", name, decision.reason)
        self.reconciler.set_desired(name, decision.request, decision.reason)

    def _failed(self, name: str, api: ScaledAPI, phase: str, e: Exception) -> None:
        """One API's autoscaling failed: it keeps its count, the error shows, logged once."""
        what = f"{type(e).__name__}: {e}"
        self.reconciler.note_decision(name, f"autoscaling failed ({what}); keeping {api.desired} "
                                            "replica(s) until the configuration is fixed")
        if self._errors.get((name, phase)) != what:
            self._errors[(name, phase)] = what
            log.error("[%s] autoscaler: %s; this api keeps %d replica(s), the others go on",
                      name, what, api.desired)

    async def run(self) -> None:
        next_tick = self.clock() + self.tick
        while True:
            now = self.clock()
            try:
                self.sample(now)
                await self.sample_cpu(now)
                if now >= next_tick:
                    next_tick = now + self.tick
                    self.decide(now)
            except Exception:  # a bad tick must not end the daemon
                log.exception("autoscaler tick failed")
            await asyncio.sleep(self.sample_interval)
