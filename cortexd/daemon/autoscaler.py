"""The autoscaler loop: samples in-flight requests at the gateway, ticks core.autoscale.

Every settings.sample_interval seconds it records each API's in-flight count (a
ring buffer covering the API's `window`); every settings.autoscale_tick seconds
it calls core.autoscale.decide and writes the request as the API's desired
replica count, which the reconciler converges to. The decision's reason is kept
on the API (shown by `cortexd get`) and logged when the count changes.

Legacy `kind: api` APIs declare target_cpu_utilization; their CPU is not sampled
yet, so they keep their replica count (said once in the events).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

from cortexd.core import autoscale
from cortexd.daemon.reconciler import Reconciler

log = logging.getLogger("cortexd.autoscaler")


class Autoscaler:
    def __init__(self, reconciler: Reconciler, gateway, *, sample_interval: float = 1.0,
                 tick: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.reconciler = reconciler
        self.gateway = gateway
        self.sample_interval = sample_interval
        self.tick = tick
        self.clock = clock
        self._samples: dict[str, deque[autoscale.Sample]] = {}
        self._states: dict[str, autoscale.AutoscalerState] = {}
        self._deployed: dict[str, float] = {}
        self._cpu_noted: set[str] = set()

    def sample(self, now: float) -> None:
        for name, api in self.reconciler.apis.items():
            if self._deployed.get(name) != api.deployed_at:
                # (re)deployed: history starts over, as Cortex's does
                self._deployed[name] = api.deployed_at
                self._states[name] = autoscale.AutoscalerState()
                self._samples[name] = deque(
                    maxlen=autoscale.samples_to_keep(api.spec.autoscaling, self.sample_interval))
            self._samples[name].append(autoscale.Sample(now, self.gateway.api_in_flight(name)))
        for name in list(self._samples):
            if name not in self.reconciler.apis:
                for table in (self._samples, self._states, self._deployed):
                    table.pop(name, None)

    def decide(self, now: float) -> None:
        for name, api in self.reconciler.apis.items():
            spec = api.spec.autoscaling
            if spec.target_cpu_utilization is not None:
                if name not in self._cpu_noted:
                    self._cpu_noted.add(name)
                    api.last_decision = ("CPU-based autoscaling (target_cpu_utilization) is not "
                                         f"measured yet; keeping {api.desired} replica(s)")
                continue
            decision, self._states[name] = autoscale.decide(
                spec, self._samples.get(name, ()), self._states.get(name, autoscale.AutoscalerState()),
                api.desired, api.deployed_at, now)
            if decision.changed:
                log.info("[%s] autoscaler: %s", name, decision.reason)
            self.reconciler.set_desired(name, decision.request, decision.reason)

    async def run(self) -> None:
        next_tick = self.clock() + self.tick
        while True:
            now = self.clock()
            try:
                self.sample(now)
                if now >= next_tick:
                    next_tick = now + self.tick
                    self.decide(now)
            except Exception:  # a bad tick must not end the daemon
                log.exception("autoscaler tick failed")
            await asyncio.sleep(self.sample_interval)
