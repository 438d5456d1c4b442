"""The reconciler: converges what runs (backend) to what is desired (APISpecs + replica counts).

Every pass re-reads the backend (observed replicas carry their spec hash), probes
the readiness of replicas not yet ready, lets core.rollout plan the starts and
drains, and performs them. What cannot be read back from a backend it keeps in
records (api_state.py): which replicas passed their readiness probe, which are
draining, crash counts and restart backoff per API, what an API shows and the kind
of its failure. The gateway is told which replicas are routable, and, while none
is, whether requests wait or get the kind of the API's failure; a draining replica
is stopped once its in-flight requests reach 0 (or the drain deadline passes).

Collaborators: the gateway and the GPU placer through daemon/seams.py's
ReplicaRouter and GPUPlacement; readiness, liveness and the gateway's health
reports in daemon/replica_checks.py (HTTP in daemon/probe.py); the restart delay,
the status an API shows and the failure kinds in core/api_status.py; the status
snapshot is built by cortexd/status.py from the values `api_facts`,
`replica_facts`, `traffic`, `preparing` and `isolation` give.

Crashes: a replica that exits on its own is removed and replaced after an
exponential backoff (settings.backoff_initial doubling up to backoff_max); after
settings.crash_error_after crashes in a row the API shows `error` with the last
log lines, and keeps retrying at the backoff pace. A replica of the current spec
becoming ready resets the count.

Unhealthy replicas are replaced the same way (drained, a new one started under the
same backoff): one the gateway found hung (its requests time out in a row; passive
health, cortexd.core.health; the gateway calls `replica_out_of_rotation`), and one
whose /healthz stops answering 200 after it was ready (settings.liveness_failures
checks in a row, every settings.liveness_interval; the checks run beside the pass,
so a hung replica never slows it). A replica the gateway merely ejected for a while
(connection failures) is reported, not replaced: if it died, the backend says so.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from cortexd.backends.base import ReplicaBackend, ReplicaInfo
from cortexd.core import rollout
from cortexd.core.api_status import Failure, api_status
from cortexd.core.placement import Placement, no_gpu_on_host, place
from cortexd.daemon.api_state import LOG_LINES_IN_ERROR, APIState, RemovedAPI, ReplicaRecord
from cortexd.daemon.events import EventLog
from cortexd.daemon.replica_checks import ReplicaChecks
from cortexd.daemon.seams import GPUPlacement, ReplicaRouter, ScaledAPI
from cortexd.errors import CortexdError, DependencyError
from cortexd.gateway.routes import ReplicaAddress, RouteConfig, SplitConfig
from cortexd.settings import OPTIONS, DaemonSettings
from cortexd.spec.model import APISpec, SplitterSpec
from cortexd.status import APIFacts, APITraffic, ReplicaFacts

log = logging.getLogger("cortexd.reconciler")


class Reconciler:
    def __init__(
        self,
        backend: ReplicaBackend,
        gateway: ReplicaRouter,
        settings: DaemonSettings,
        events: EventLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        placer: GPUPlacement | None = None,
        probe: Callable[[ReplicaInfo], Awaitable[bool]] | None = None,
    ):
        self.backend = backend
        self.gateway = gateway
        self.settings = settings
        self.events = events
        self.clock = clock
        self.placer = placer  # GPU placement (cortexd.daemon.gpu_placer), None = no GPUs
        self.apis: dict[str, APIState] = {}
        self.splitters: dict[str, SplitterSpec] = {}  # served by the gateway alone (no replicas)
        self.records: dict[str, ReplicaRecord] = {}
        self.observed: dict[str, ReplicaInfo] = {}
        self._removed: dict[str, RemovedAPI] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # readiness and liveness of the replicas, and the gateway's reports (replica_checks.py)
        self._checks = ReplicaChecks(self.records, settings, events, clock, self.wake, probe)
        # apply() and a reconcile pass never interleave: a pass iterates the APIs across awaits
        self._lock = asyncio.Lock()
        self.forced = False  # a forced shutdown: stop draining, stop replicas at once
        self._ids = itertools.count(1)

    # -- desired state ----------------------------------------------------------

    async def apply(self, specs: list[APISpec], reasons: dict[str, str] | None = None,
                    splitters: Sequence[SplitterSpec] | None = None) -> None:
        """Make `specs` the desired set: new APIs deploy, changed ones roll, missing ones go.
        reasons: per API, what changed ("predictor.py changed"), for the roll's event.
        splitters: the traffic splitters the gateway serves beside them (None: those it has)."""
        async with self._lock:
            await self._apply(specs, reasons or {}, splitters)

    async def _apply(self, specs: list[APISpec], reasons: dict[str, str] | None = None,
                     splitters: Sequence[SplitterSpec] | None = None) -> None:
        reasons = reasons or {}
        now = self.clock()
        split = self.splitters if splitters is None else {s.name: s for s in splitters}
        await self.gateway.configure([RouteConfig.of(s) for s in specs], [SplitConfig.of(s) for s in split.values()])
        for name, splitter in split.items():  # no replicas: served as configured, from the next request
            old = self.splitters.get(name)
            if old is None or old.spec_hash != splitter.spec_hash:
                self.events.add(f"traffic splitter {'updated' if old else 'serving'} at {splitter.describe()}",
                                api=name)
        for name in self.splitters.keys() - split.keys():
            self.events.add("traffic splitter removed", api=name)
        self.splitters = dict(split)
        wanted = {s.name: s for s in specs}
        for name in list(self.apis):
            if name not in wanted:
                self.apis.pop(name)
                self._removed[name] = RemovedAPI(name, now)
                self.events.add("api removed from the configuration; stopping its replicas", api=name)
        for name, spec in wanted.items():
            state = self.apis.get(name)
            if state is None:
                self.apis[name] = APIState(spec, spec.autoscaling.init_replicas, deployed_at=now)
                self._removed.pop(name, None)
                self.events.add(
                    f"deploying {spec.autoscaling.init_replicas} replica(s) at {spec.networking.endpoint}",
                    api=name, kind="deploy")
            elif state.spec.spec_hash != spec.spec_hash:
                state.roll_to(spec, now)
                self.events.add(f"rolling api {name}: {reasons.get(name, 'configuration changed')}", api=name,
                                kind="rollout")
            else:
                state.spec = spec  # same hash; keeps source lines current
        self.wake()

    def set_desired(self, api: str, count: int, decision: str | None = None) -> None:
        state = self.apis.get(api)
        if state is None:
            return
        if decision is not None:
            state.last_decision = decision
        if count != state.desired:
            self.events.add(f"scaling from {state.desired} to {count} replica(s)"
                            + (f": {decision}" if decision else ""), api=api, kind="scale")
            state.desired = count
            self.wake()

    def note_decision(self, api: str, decision: str) -> None:
        state = self.apis.get(api)
        if state is not None:
            state.last_decision = decision

    def wake(self) -> None:
        self._wake.set()

    def force(self, stop_timeout: float = 0.5) -> None:
        """A forced shutdown (a second signal): stop draining, stop replicas within `stop_timeout`."""
        self.settings = self.settings.with_(drain_timeout=0.0, stop_timeout=stop_timeout)
        self.forced = True

    # -- what the autoscaler reads (cortexd.daemon.seams.ScalingTarget) ---------------

    def scaled_apis(self) -> dict[str, ScaledAPI]:
        return {name: ScaledAPI(s.spec, s.desired, s.deployed_at) for name, s in self.apis.items()}

    def ready_replicas(self, apis: Collection[str]) -> dict[str, str]:
        return {rid: info.api for rid, info in self.observed.items()
                if info.api in apis and info.state == "running"
                and (rec := self.records.get(rid)) is not None and rec.routable()}

    async def cpu_seconds(self, replica_ids: list[str]) -> dict[str, float]:
        return await self.backend.cpu_seconds(replica_ids)

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end the daemon
                log.exception("reconcile pass failed")
            starting = any(r.ready_at is None and not r.stopping for r in self.records.values())
            interval = 0.1 if starting else self.settings.reconcile_interval
            self._wake.clear()
            # asyncio.wait, not wait_for: Python 3.11's wait_for returns instead of raising when it
            # is cancelled just as the wake-up arrives (a reload applied during shutdown), and the
            # loop would then outlive its cancellation, hanging `cortexd down`
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=interval)
            finally:
                waiter.cancel()

    async def reconcile_once(self) -> None:
        async with self._lock:
            await self._reconcile_once()

    async def _reconcile_once(self) -> None:
        now = self.clock()
        observed = await self.backend.list()
        self.observed = {r.replica_id: r for r in observed}
        # forget records of replicas the backend no longer has
        for rid in [rid for rid in self.records if rid not in self.observed]:
            if not self.records[rid].stopping:
                self.records.pop(rid)

        by_api: dict[str, list[ReplicaInfo]] = {}
        for info in observed:
            by_api.setdefault(info.api, []).append(info)
            if info.replica_id not in self.records:
                # adopted (daemon restart, Docker) or started by a previous pass
                self.records[info.replica_id] = ReplicaRecord(info.replica_id, info.spec_hash, now)

        for name, infos in by_api.items():
            if name not in self.apis:
                for info in infos:
                    self._drain(info.replica_id, now, why="its api is no longer configured")
        for name in list(self._removed):
            if name not in by_api:
                self._removed.pop(name)
                self.events.add("api deleted", api=name)

        for name, state in list(self.apis.items()):
            try:
                await self._reconcile_api(state, by_api.get(name, []), now)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # one API's failure must not stall the others
                log.exception("reconciling api %s failed", name)
                self._fail(state, Failure.INTERNAL, f"internal error while reconciling: {type(e).__name__}: {e}",
                           now, logs=[])

        await self._finish_drains(now)

    async def _reconcile_api(self, state: APIState, infos: list[ReplicaInfo], now: float) -> None:
        spec = state.spec
        live = await self._live_replicas(state, infos, now)

        observed = [
            rollout.ObservedReplica(
                replica_id=i.replica_id,
                spec_hash=i.spec_hash,
                ready=self.records[i.replica_id].ready_at is not None,
                draining=self.records[i.replica_id].draining_since is not None,
                started_at=self.records[i.replica_id].launched_at,
            )
            for i in live
        ]
        plan = rollout.plan(spec.spec_hash, state.desired, observed,
                            spec.update_strategy.max_surge, spec.update_strategy.max_unavailable)
        for rid in plan.drain:
            self._drain(rid, now, why="rolling update / scale down")

        state.wait(None)
        gpu_blocked = False
        if plan.start > 0:
            gpu_blocked = await self._start_replicas(state, plan.start, now)
            if gpu_blocked:
                self._make_room_for_update(state, live, now)

        routable = [ReplicaAddress(i.replica_id, i.host, i.port, i.socket)
                    for i in live if self.records[i.replica_id].routable()]
        self.gateway.set_replicas(spec.name, routable)
        self._update_status(state, live, routable)
        # no replica on its way and none can start until a GPU is free: requests are told so at
        # once rather than waiting no_replica_wait for a replica that is not coming
        on_the_way = gpu_blocked and any(
            info.api == spec.name and (rec := self.records.get(rid)) is not None and rec.ready_at is None
            and rec.draining_since is None and not rec.stopping and info.state != "exited"
            for rid, info in self.observed.items())
        self.gateway.set_state(
            spec.name,
            starting=not routable and state.status != "error",
            failure=state.failure if (state.status == "error" and not routable) else None,
            waiting_for="a free GPU" if gpu_blocked and not on_the_way and not routable else None,
        )

    async def _live_replicas(self, state: APIState, infos: list[ReplicaInfo],
                             now: float) -> list[ReplicaInfo]:
        """The API's replicas that go on running, after probing readiness and liveness. One that
        exited, one not ready within the start timeout and an unhealthy one are stopped or
        replaced here (the failure counted: core.api_status), so the plan sees them missing."""
        live: list[ReplicaInfo] = []
        for info in infos:
            rec = self.records[info.replica_id]
            if rec.stopping:
                continue
            if info.state == "exited":
                if rec.draining_since is None:
                    await self._on_crash(state, info, now)
                else:
                    self._stop_later(info.replica_id)
                continue
            live.append(info)

        await self._checks.readiness([i for i in live if self.records[i.replica_id].ready_at is None], state)
        self._checks.liveness(live, now)

        # a replica that never became ready within the start timeout counts as failed
        for info in live:
            rec = self.records[info.replica_id]
            if (rec.ready_at is None and rec.draining_since is None
                    and now - rec.launched_at > self.settings.start_timeout):
                await self._on_crash(state, info, now, timed_out=True)
            elif rec.unhealthy is not None and not rec.replacing and rec.draining_since is None:
                await self._on_unhealthy(state, info, now)
        return [i for i in live if not self.records[i.replica_id].stopping]

    def _update_status(self, state: APIState, live: list[ReplicaInfo], routable: list[ReplicaAddress]) -> None:
        current = state.spec.spec_hash
        current_ready = sum(1 for i in live if i.spec_hash == current and self.records[i.replica_id].routable())
        stale = any(i.spec_hash != state.spec.spec_hash for i in live)
        status = api_status(failing=state.failing, desired=state.desired, current_ready=current_ready,
                            stale=stale, routable=len(routable))
        if status == "error":
            state.status = "error"
            return
        if status == "live":
            if state.status != "live":
                self.events.add(f"live: {current_ready} replica(s) ready", api=state.spec.name)
            state.show("live")
        else:
            if state.status == "live":
                self.events.add("updating", api=state.spec.name)
            state.status = "updating"
            if state.reason is None and state.pending_reason:
                state.reason = state.pending_reason

    # -- starting ------------------------------------------------------------------

    async def _start_replicas(self, state: APIState, count: int, now: float) -> bool:
        """Start up to `count` replicas; True when GPU placement held one back."""
        spec = state.spec
        if now < state.next_start_at:
            state.wait(f"restarting in {state.next_start_at - now:.0f}s (crash backoff)")
            return False
        if spec.replica_gpus > 0 and self._no_gpu_on_host(state):
            return False  # before any image or environment is made for it
        if state.image_ready_for != spec.spec_hash:
            self._ensure_image(state)
            # the process backend has no image: what it prepares (an environment) it says itself
            # through preparing(), and when there is nothing to prepare it must say nothing
            if self.backend.builds_images:
                state.wait("preparing the replica image")
            return False
        for _ in range(count):
            gpu_ids: tuple[int, ...] = ()
            replica_id = f"{spec.name}-{spec.spec_hash[:6]}-{secrets.token_hex(3)}"
            if spec.replica_gpus > 0:
                placement = self._place(spec, replica_id)
                if placement.pending:
                    state.wait(placement.pending, Failure.NO_GPU)
                    return True
                gpu_ids = placement.gpu_ids
            try:
                info = await self.backend.start(spec, replica_id, gpu_ids)
            except DependencyError as e:  # the environment, made again at the start
                self._fail(state, Failure.DEPENDENCIES, f"could not start a replica: {e}", now, logs=[])
                return False
            except (CortexdError, OSError) as e:
                self._fail(state, Failure.START, f"could not start a replica: {e}", now, logs=[])
                return False
            self.records[info.replica_id] = ReplicaRecord(info.replica_id, info.spec_hash, self.clock())
            self.observed[info.replica_id] = info
            self.events.add(f"replica {replica_id} started", api=spec.name)
        return False

    def _make_room_for_update(self, state: APIState, live: list[ReplicaInfo], now: float) -> None:
        """A rolling update cannot surge when the old version holds every GPU it needs: drain
        one old replica first (as max_surge: 0 would), rather than wait forever."""
        spec = state.spec
        if any(self.records[i.replica_id].draining_since is not None for i in live):
            return  # one is already on its way out; its GPUs free up when it stops
        stale = [i for i in live if i.spec_hash != spec.spec_hash and i.gpu_ids]
        if not stale:
            return
        oldest = min(stale, key=lambda i: self.records[i.replica_id].launched_at)
        self._drain(oldest.replica_id, now,
                    why="no free GPU for the new version's replica: freeing this one's first "
                        "(surging needs spare GPUs; max_surge: 0 makes this the plan)")
        state.wait(f"{state.pending_reason}; draining old replica {oldest.replica_id} to free its GPU(s)",
                   state.pending)

    def _ensure_image(self, state: APIState) -> None:
        if state.image_task is not None and not state.image_task.done():
            return
        spec = state.spec

        async def build() -> None:
            try:
                await self.backend.ensure_image(spec)
            except asyncio.CancelledError:
                raise
            except DependencyError as e:  # pip's answer: the same files fail again, so `error` at once
                self._fail(state, Failure.DEPENDENCIES, str(e), self.clock(), logs=e.detail.splitlines(),
                           at_once=e.deterministic)
                return
            except Exception as e:  # CortexdError says what to do; anything else is shown as it is
                detail = str(e) if isinstance(e, CortexdError) else f"{type(e).__name__}: {e}"
                self._fail(state, Failure.IMAGE, f"could not prepare the replica image: {detail}", self.clock(),
                           logs=[])
                return
            if state.spec.spec_hash == spec.spec_hash:
                state.image_ready_for = spec.spec_hash
            self.wake()

        state.image_task = asyncio.ensure_future(build())

    def _place(self, spec: APISpec, replica_id: str) -> Placement:
        if self.placer is None:
            return place((), {}, spec.name, spec.replica_gpus, "no GPU is available to this daemon")
        return self.placer.assign(spec, replica_id, self.observed)

    def _no_gpu_on_host(self, state: APIState) -> bool:
        """Whether the host has no GPU at all for an API that requests one: nothing will free one, so
        it shows `error` at once with what to do, rather than wait (core/placement.py)."""
        spec = state.spec
        placement = self._place(spec, "")
        if not placement.none_on_host:
            if state.failure is Failure.NO_GPU_ON_HOST:  # a GPU appeared
                state.recovered()
            return False
        message = no_gpu_on_host(spec.name, spec.compute.gpu, placement.host_reason, OPTIONS["cpu_only"].flag or "")
        if state.cannot_start(Failure.NO_GPU_ON_HOST, message):
            self.events.add(message, api=spec.name, level="error")
        return True

    # -- health ----------------------------------------------------------------------

    def replica_out_of_rotation(self, api: str, replica_id: str, reason: str | None, *,
                                replace: bool, until: float | None = None) -> None:
        """The gateway took a replica out of rotation: see ReplicaChecks.out_of_rotation."""
        self._checks.out_of_rotation(api, replica_id, reason, replace=replace, until=until)

    async def _on_unhealthy(self, state: APIState, info: ReplicaInfo, now: float) -> None:
        """Replace an unhealthy replica: drain it (out of routing now, stopped once its
        requests end or time out) and let the plan start another, under the crash backoff."""
        rec = self.records[info.replica_id]
        rec.replacing = True
        message = f"replica {info.replica_id} unhealthy: {rec.unhealthy}"
        try:
            lines = await self.backend.logs(info.replica_id, tail=LOG_LINES_IN_ERROR)
        except CortexdError:
            lines = []
        self._drain(info.replica_id, now, why=f"unhealthy: {rec.unhealthy}; replacing it")
        state.restarts += 1
        self._fail(state, Failure.UNHEALTHY, message, now, logs=lines)
        if not state.failing:
            state.show("updating", f"{message}; replacing it", Failure.UNHEALTHY)

    async def replica_models(self, api: str, timeout: float = 2.0) -> dict[str, dict[str, Any]]:
        """{replica id: the models it serves and holds in memory} from each ready replica's GET.

        Only replicas that serve models answer with model metadata; a replica that cannot
        answer within `timeout` gets {"error": ...} (it may be busy: never fatal).
        """
        ready = [info for rid, info in self.observed.items()
                 if info.api == api and (rec := self.records.get(rid)) is not None
                 and rec.ready_at is not None and not rec.stopping]
        return await self._checks.models(ready, timeout)

    # -- crashes ---------------------------------------------------------------------

    async def _on_crash(self, state: APIState, info: ReplicaInfo, now: float, timed_out: bool = False) -> None:
        try:
            lines = await self.backend.logs(info.replica_id, tail=LOG_LINES_IN_ERROR)
        except CortexdError:
            lines = []
        if timed_out:
            kind, what = Failure.NOT_READY, f"did not become ready within {self.settings.start_timeout:.0f}s"
        elif info.oom_killed:
            kind, what = Failure.OOM, "was killed: out of memory (raise compute.mem)"
        else:
            kind, what = Failure.CRASHED, f"exited with code {info.exit_code}"
        was_ready = self.records[info.replica_id].ready_at is not None
        self.records[info.replica_id].stopping = True
        self._stop_later(info.replica_id)
        state.restarts += 1
        if was_ready and not timed_out and info.exit_code in (0, None) and not info.oom_killed:
            # a replica that served and then stopped cleanly is replaced without counting a crash
            self.events.add(f"replica {info.replica_id} stopped; replacing it", api=state.spec.name, kind="crash")
            return
        self._fail(state, kind, f"replica {info.replica_id} {what}", now, logs=lines)

    def _fail(self, state: APIState, kind: Failure, message: str, now: float, logs: list[str],
              at_once: bool = False) -> None:
        """Count a failure of `kind` (`message` says it for `cortexd get`): the next start waits
        out the backoff; enough in a row, or one that fails again as it is, show `error`."""
        settings = self.settings
        delay = state.record_failure(kind, message, now, logs, backoff=(settings.backoff_initial, settings.backoff_max),
                                     error_after=settings.crash_error_after, at_once=at_once)
        self.events.add(f"{message}; restarting in {delay:.0f}s", api=state.spec.name, level="error", kind="crash")
        if logs:
            log.error("[%s] last log lines of the failed replica:\n%s", state.spec.name, "\n".join(logs))

    # -- draining and stopping -------------------------------------------------------

    def _drain(self, replica_id: str, now: float, why: str) -> None:
        rec = self.records.get(replica_id)
        if rec is None or rec.draining_since is not None:
            return
        rec.draining_since = now
        info = self.observed.get(replica_id)
        api = info.api if info else None
        self.events.add(f"replica {replica_id} draining ({why})", api=api)

    async def _finish_drains(self, now: float) -> None:
        for rid, rec in list(self.records.items()):
            if rec.draining_since is None or rec.stopping:
                continue
            info = self.observed.get(rid)
            api = info.api if info else ""
            # the gateway keeps counting a removed API's in-flight requests, so its replicas
            # drain like any other
            in_flight = self.gateway.replica_in_flight(api, rid) if api else 0
            # a rollout or scale-down waits as long as the gateway lets a request run, so no
            # request is cut; drain_timeout bounds only the daemon's own shutdown
            limit = max(self.settings.drain_timeout, self.settings.upstream_timeout)
            if in_flight == 0 or now - rec.draining_since > limit:
                rec.stopping = True
                self._stop_later(rid)

    def _stop_later(self, replica_id: str) -> None:
        rec = self.records.get(replica_id)
        if rec is not None:
            rec.stopping = True

        async def stop() -> None:
            try:
                await self.backend.stop(replica_id, timeout=self.settings.stop_timeout)
            except CortexdError as e:
                self.events.add(f"could not stop replica {replica_id}: {e}", level="warning")
            finally:
                self.records.pop(replica_id, None)
                info = self.observed.pop(replica_id, None)
                self.events.add(f"replica {replica_id} stopped", api=info.api if info else None)
                self.wake()

        task = asyncio.ensure_future(stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Drain every replica (deadline settings.drain_timeout), then stop them all."""
        deadline = self.clock() + self.settings.drain_timeout
        for name in self.apis:
            self.gateway.set_replicas(name, [])
        while self.clock() < deadline and not self.forced:
            busy = sum(self.gateway.api_in_flight(n) for n in self.apis)
            if busy == 0:
                break
            await asyncio.sleep(0.05)
        for state in self.apis.values():
            if state.image_task is not None:
                state.image_task.cancel()
        await self.backend.settle()  # a start cancelled with the reconcile task still creates its replica
        infos = await self.backend.list()
        await asyncio.gather(
            *(self.backend.stop(i.replica_id, timeout=self.settings.stop_timeout) for i in infos),
            return_exceptions=True,
        )
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._checks.close()

    # -- status --------------------------------------------------------------------------

    def traffic(self, api: str) -> APITraffic:
        """What the gateway counts for `api` now (an input of cortexd.status.build_status)."""
        route = self.gateway.route(api)
        return APITraffic(
            self.gateway.api_in_flight(api),
            {rid: self.gateway.replica_in_flight(api, rid) for rid, info in self.observed.items()
             if info.api == api},
            route.counters_snapshot())

    def preparing(self, api: str) -> tuple[str, str | None] | None:
        """What the backend prepares for `api` (the process backend's environments), or None."""
        return self.backend.preparing(api)

    def isolation(self, api: str) -> Mapping[str, Any] | None:
        """Who the backend runs `api`'s replicas as and which limits hold, or None."""
        return self.backend.isolation(api)

    def api_facts(self) -> list[APIFacts]:
        """Each configured API as this reconciler holds it (inputs of cortexd.status.build_status)."""
        return [state.facts() for state in self.apis.values()]

    def replica_facts(self) -> list[ReplicaFacts]:
        """Each observed replica this reconciler keeps a record of, with what the record says."""
        return [rec.facts(info) for rid, info in self.observed.items() if (rec := self.records.get(rid)) is not None]
