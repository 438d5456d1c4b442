"""Recording fakes of what the reconciler drives: a backend, a gateway, a clock.

They implement the seams of cortexd/daemon/seams.py and record what the reconciler did
(`actions`, `routable`, `states`), so unit tests assert what a user would see without
processes or real time. The `world` fixture (tests/unit/conftest.py) wires them to a
Reconciler; `settle` runs a few passes.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar

from cortexd.backends.base import ReplicaInfo
from cortexd.core.api_status import Failure
from cortexd.nvml import GPUDevice, GPUInventory
from cortexd.status import DaemonStatus, Status, build_status


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """A ReplicaBackend (cortexd.backends.base) that records what it was asked; builds "images"."""

    name = "fake"
    builds_images = True

    def __init__(self):
        self.replicas: dict[str, ReplicaInfo] = {}
        self.actions: list[tuple[str, str]] = []
        self.ports = iter(range(20000, 30000))

    async def ensure_image(self, spec):
        self.actions.append(("image", spec.name))

    async def start(self, spec, replica_id, gpu_ids=()):
        info = ReplicaInfo(api=spec.name, replica_id=replica_id, spec_hash=spec.spec_hash,
                           state="running", host="127.0.0.1", port=next(self.ports), started_at=0.0)
        self.replicas[replica_id] = info
        self.actions.append(("start", replica_id))
        return info

    async def stop(self, replica_id, timeout=10.0):
        self.replicas.pop(replica_id, None)
        self.actions.append(("stop", replica_id))

    async def list(self):
        return list(self.replicas.values())

    async def logs(self, replica_id, tail=None):
        return ["Traceback (most recent call last):", "RuntimeError: model file missing"]

    def log_path(self, replica_id):
        return None

    async def cpu_seconds(self, replica_ids):
        return {rid: 0.0 for rid in replica_ids if rid in self.replicas}

    def preparing(self, api):
        return None

    def isolation(self, api):
        return None

    def replica_of_peer(self, pid, uid):
        return None

    def notices(self, spec):
        return []

    async def collect_garbage(self, deployed):
        pass

    async def settle(self):
        self.actions.append(("settle", ""))

    async def close(self):
        self.actions.append(("close", ""))

    def crash(self, replica_id, code=1, oom=False):
        self.replicas[replica_id] = dataclasses.replace(
            self.replicas[replica_id], state="exited", exit_code=code, oom_killed=oom)

    def of(self, spec):
        return [r for r in self.replicas.values() if r.spec_hash == spec.spec_hash]


class FakeRoute:
    def __init__(self, counters):
        self.counters = counters

    def counters_snapshot(self):
        return dict(self.counters)


class FakeGateway:
    """What the reconciler needs from the gateway (cortexd.daemon.seams.ReplicaRouter), recorded."""

    COUNTERS: ClassVar[dict] = {"total": 3, "2xx": 2, "4xx": 1, "5xx": 0, "in_flight": 0, "monitoring": None}

    def __init__(self):
        self.routable: dict[str, list[str]] = {}
        self.states: dict[str, tuple[bool, Failure | None]] = {}
        self.waiting: dict[str, str | None] = {}
        self.in_flight: dict[str, int] = {}
        self.configured: list = []
        self.splitters: list = []

    async def configure(self, apis, splitters=()):
        self.configured = apis
        self.splitters = list(splitters)

    def set_replicas(self, api, replicas):
        self.routable[api] = sorted(r[0] for r in replicas)

    def set_state(self, api, *, starting, failure=None, waiting_for=None):
        self.states[api] = (starting, failure)
        self.waiting[api] = waiting_for

    def replica_in_flight(self, api, replica_id):
        return self.in_flight.get(replica_id, 0)

    def api_in_flight(self, api):
        return 0

    def route(self, api):
        return FakeRoute(self.COUNTERS)


async def settle(rec, passes=3):
    for _ in range(passes):
        await rec.reconcile_once()
        await asyncio.sleep(0)  # let image and stop tasks run
        await asyncio.sleep(0)


DAEMON = DaemonStatus("test", 1, "fake", None, "127.0.0.1", 0.0, (), None, (), None)


def snapshot(rec, *, wall_now: float = 0.0, mono_now: float | None = None) -> Status:
    """The status snapshot of what `rec` holds, built as the daemon builds it (running.Daemon.status)."""
    return build_status(
        DAEMON, rec.api_facts(), rec.replica_facts(), {n: rec.traffic(n) for n in rec.apis}, [], None,
        urls={}, preparing={n: rec.preparing(n) for n in rec.apis}, wall_now=wall_now,
        mono_now=rec.clock() if mono_now is None else mono_now, isolation={n: rec.isolation(n) for n in rec.apis})


def api_snapshot(rec, api: str, *, wall_now: float = 0.0, mono_now: float | None = None) -> dict:
    """The JSON of `api` in that snapshot (what `cortexd get API -o json` shows of it)."""
    status = snapshot(rec, wall_now=wall_now, mono_now=mono_now).api(api)
    assert status is not None, f"no api {api!r} in the snapshot"
    return status.to_json()


def gpu_inventory(count: int, reason: str | None = None) -> GPUInventory:
    """What NVML reports on a host with `count` GPUs (none: `reason` says why)."""
    return GPUInventory(tuple(GPUDevice(i, f"GPU-{i}", "Fake GPU", 2**34, 0, 0) for i in range(count)),
                        reason=None if count else reason)
