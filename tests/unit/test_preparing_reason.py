"""What an API says it waits for while its replicas are prepared: the process backend has no
image, so it never says `preparing the replica image` (it says what it installs, or nothing)."""

from __future__ import annotations

from cortexd.daemon.events import EventLog
from cortexd.daemon.reconciler import Reconciler
from cortexd.settings import DaemonSettings
from tests.builders import rollout_spec
from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway, api_snapshot


class FakeProcessBackend(FakeBackend):
    """Like the process backend: no image; preparing() tells what its environments are doing."""

    name = "process"
    builds_images = False

    def __init__(self, activity=None):
        super().__init__()
        self.activity = activity

    def preparing(self, api):
        return self.activity


def reasons_until_live(backend) -> list[str]:
    import asyncio

    async def run() -> list[str]:
        clock = FakeClock()
        ready: set[str] = set()

        async def probe(info):
            return info.replica_id in ready

        rec = Reconciler(backend, FakeGateway(), DaemonSettings(), EventLog(clock), clock=clock, probe=probe)
        await rec.apply([rollout_spec()])
        seen = []
        for _ in range(6):
            await rec.reconcile_once()
            snap = api_snapshot(rec, "api", wall_now=clock(), mono_now=clock())
            seen.append(f"{snap['status']} | {snap['reason']} | {snap['replicas']['pending_reason']}")
            ready.update(backend.replicas)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert rec.apis["api"].status == "live", seen
        return seen

    return asyncio.run(run())


def test_process_backend_never_says_it_prepares_an_image():
    seen = reasons_until_live(FakeProcessBackend())
    assert not any("image" in line for line in seen), seen


def test_docker_backend_says_it_prepares_the_image():
    seen = reasons_until_live(FakeBackend())
    assert "preparing the replica image" in seen[0]
