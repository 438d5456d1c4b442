"""Whether the reconciler's replicas answer: readiness before they are routed to, liveness after.

The reconciler (reconciler.py) asks each pass: replicas not ready yet are probed
(GET /healthz, probe.py) and the ready ones become routable; a ready replica is checked
again every settings.liveness_interval, beside the pass so a hung one never slows it,
and settings.liveness_failures failed checks in a row mark it unhealthy (the reconciler
replaces it). The gateway's passive health reports here too (`out_of_rotation`): a
replica it found hung is marked unhealthy; one it ejected for a while is only reported.
What this module changes is the replicas' records (api_state.ReplicaRecord), shared
with the reconciler; a replica marked unhealthy wakes the reconciler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from cortexd.backends.base import ReplicaInfo
from cortexd.daemon.api_state import APIState, ReplicaRecord
from cortexd.daemon.events import EventLog
from cortexd.daemon.probe import ReplicaProbe
from cortexd.settings import DaemonSettings


class ReplicaChecks:
    """Readiness and liveness probes of replicas, and the gateway's reports about them."""

    def __init__(self, records: dict[str, ReplicaRecord], settings: DaemonSettings, events: EventLog,
                 clock: Callable[[], float], wake: Callable[[], None],
                 probe: Callable[[ReplicaInfo], Awaitable[bool]] | None = None):
        self.records = records  # the reconciler's, by replica id
        self.events = events
        self.clock = clock
        self.wake = wake
        self.interval = settings.liveness_interval
        self.failures_allowed = settings.liveness_failures
        self._http = ReplicaProbe(settings.probe_timeout)
        self._probe_one = probe or self._http.healthy
        self._tasks: set[asyncio.Task[None]] = set()

    async def readiness(self, infos: list[ReplicaInfo], state: APIState) -> None:
        """Probe replicas not ready yet; those that answer are ready from now (and one of the
        API's current version ends its failures in a row)."""
        if not infos:
            return
        results = await asyncio.gather(*(self._probe_one(i) for i in infos))
        for info, ok in zip(infos, results):
            if not ok:
                continue
            rec = self.records[info.replica_id]
            rec.ready_at = self.clock()
            rec.next_liveness_at = rec.ready_at + self.interval
            self.events.add(f"replica {info.replica_id} ready in {rec.ready_at - rec.launched_at:.1f}s",
                            api=state.spec.name)
            if info.spec_hash == state.spec.spec_hash:
                state.recovered()

    def liveness(self, live: list[ReplicaInfo], now: float) -> None:
        """Start a /healthz check of each ready replica that is due one (beside the pass)."""
        for info in live:
            rec = self.records[info.replica_id]
            if (rec.ready_at is None or rec.draining_since is not None or rec.unhealthy is not None
                    or rec.checking or now < rec.next_liveness_at):
                continue
            rec.checking = True
            self._spawn(self._check(info, rec))

    async def _check(self, info: ReplicaInfo, rec: ReplicaRecord) -> None:
        try:
            ok = await self._probe_one(info)
        finally:
            rec.checking = False
            rec.next_liveness_at = self.clock() + self.interval
        if ok:
            rec.liveness_failures = 0
            return
        rec.liveness_failures += 1
        n = rec.liveness_failures
        if n >= self.failures_allowed and rec.unhealthy is None:
            rec.unhealthy = f"/healthz failed {n} checks in a row"
            self.wake()

    def out_of_rotation(self, api: str, replica_id: str, reason: str | None, *,
                        replace: bool, until: float | None = None) -> None:
        """The gateway took a replica out of rotation (cortexd.core.health): report it, and
        when `replace` (it is hung) mark it for replacement; else it is back in rotation at `until`."""
        rec = self.records.get(replica_id)
        if rec is None or rec.stopping:
            return
        if replace:
            if rec.unhealthy is None:
                rec.unhealthy = reason or "the gateway found it unhealthy"
            self.wake()
            return
        rec.out_of_rotation, rec.ejected_until = reason, until
        self.events.add(f"replica {replica_id} out of rotation: {reason}", api=api, level="warning", kind="crash")

    async def models(self, ready: list[ReplicaInfo], timeout: float) -> dict[str, dict[str, Any]]:
        """{replica id: the models it serves} from each of `ready`'s GET / ({"error": ...} when busy)."""
        if not ready:
            return {}
        answers = await asyncio.gather(*(self._http.models(i, timeout) for i in ready))
        return {i.replica_id: a for i, a in zip(ready, answers) if a}

    async def close(self) -> None:
        """Let the checks in progress end, then close the probes' HTTP session."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
