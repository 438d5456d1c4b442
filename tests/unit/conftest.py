"""Fixtures of the unit tier: the guard that keeps it pure, and the reconciler's fake `world`.

The unit tier is pure: a unit test that starts a process fails, saying where such a test goes.

Tests with real processes, sockets, watchers or clocks belong in tests/integration.
The check covers the ways Python starts a process: `subprocess.Popen` (asyncio's
subprocesses too), `_posixsubprocess.fork_exec` (multiprocessing's spawn), `os.fork`
(multiprocessing's fork, `os.spawn*`), `os.posix_spawn*` and `os.system`.
"""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess

import pytest

from cortexd.daemon.events import EventLog
from cortexd.daemon.reconciler import Reconciler
from cortexd.settings import DaemonSettings
from tests.unit.reconciler_fakes import FakeBackend, FakeClock, FakeGateway

MOVE = "unit tests start no processes: {what} was started; move this test to tests/integration"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def no_processes(monkeypatch, request):
    started: list[str] = []

    def refuse(what: str):
        def refused(*args, **kwargs):
            started.append(what)
            # pytest.fail raises a BaseException: code under test that catches Exception cannot hide it
            pytest.fail(MOVE.format(what=what), pytrace=False)
        return refused

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("a subprocess"))
    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse("a process (fork_exec)"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse(f"a process (os.{name})"))
    yield
    if started and not request.node.stash.get(CALL_FAILED, False):  # the test swallowed the failure above
        pytest.fail(MOVE.format(what=started[0]), pytrace=False)


@pytest.fixture(autouse=True)
def no_host_state(monkeypatch, tmp_path_factory):
    """A unit test that makes a process backend changes nothing of the host's: its uid registry
    is a file of the test's own and no cgroup is made (tests/faults/test_isolation.py runs both
    for real)."""
    from cortexd.backends import cgroups, replica_uids

    monkeypatch.setattr(replica_uids, "REGISTRY", tmp_path_factory.mktemp("uids") / "replica-uids.json")
    monkeypatch.setattr(cgroups.Cgroups, "detect", classmethod(
        lambda cls, instance, proc="/proc": cls(instance, {}, dict.fromkeys(cgroups.CONTROLLERS, "unit test"))))


@pytest.fixture
def world():
    """A Reconciler over the recording fakes on a fake clock; `ready` holds the replicas that pass their probe."""
    clock = FakeClock()
    backend, gateway = FakeBackend(), FakeGateway()
    ready: set[str] = set()

    async def probe(info):
        return info.replica_id in ready

    settings = DaemonSettings(backoff_initial=1.0, backoff_max=8.0, crash_error_after=3,
                              drain_timeout=5.0, start_timeout=60.0)
    rec = Reconciler(backend, gateway, settings, EventLog(clock), clock=clock, probe=probe)
    return rec, backend, gateway, clock, ready
