"""DockerBackend's bookkeeping with a fake engine: image tags reused, replicas forgotten."""

from __future__ import annotations

import asyncio
import threading

import docker.errors
import pytest

from cortexd.backends.docker import LABEL_REPLICA, DockerBackend
from tests.docker.conftest import make_spec


@pytest.fixture(autouse=True)
def non_root_replicas(monkeypatch):
    # as root the backend checks that uid 10001 can read the project (tmp_path cannot be)
    monkeypatch.setattr("cortexd.backends.docker.container_user", lambda uid, gid: "1000:1000")


class FakeContainer:
    def __init__(self, engine: FakeEngine, kwargs: dict):
        self.engine, self.kwargs = engine, kwargs
        labels = kwargs["labels"]
        self.name = kwargs["name"]
        self.status = "created"
        self.attrs = {
            "Id": f"id-{labels[LABEL_REPLICA]}", "Name": "/" + self.name,
            "Config": {"Labels": labels, "Image": kwargs["image"]},
            "State": {"Status": "running"},
        }

    def put_archive(self, path, data):
        return True

    def start(self):
        self.status = "running"

    def reload(self):
        pass

    def stop(self, timeout=10):
        self.status = "exited"

    def remove(self, force=False, v=False):
        self.engine.containers.by_name.pop(self.name, None)


class FakeContainers:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.by_name: dict[str, FakeContainer] = {}
        self.images: set[str] = set()

    def create(self, **kwargs):
        if kwargs["image"] not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {kwargs['image']}")
        c = FakeContainer(self.engine, kwargs)
        self.by_name[c.name] = c
        return c

    def get(self, name):
        try:
            return self.by_name[name]
        except KeyError:
            raise docker.errors.NotFound(name) from None

    def list(self, all=False, filters=None, ignore_removed=False):
        return list(self.by_name.values())


class FakeNetwork:
    def __init__(self, name, options):
        self.attrs = {"Name": name, "Driver": "bridge", "Options": dict(options or {})}


class FakeNetworks:
    def __init__(self):
        self.by_name: dict[str, FakeNetwork] = {}

    def get(self, name):
        try:
            return self.by_name[name]
        except KeyError:
            raise docker.errors.NotFound(name) from None

    def create(self, name, driver="bridge", options=None, labels=None):
        self.by_name[name] = FakeNetwork(name, options)
        return self.by_name[name]


class FakeEngine:
    def __init__(self):
        self.containers = FakeContainers(self)
        self.networks = FakeNetworks()

    def info(self):
        return {"OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "SecurityOptions": []}

    def close(self):
        pass


class FakeBuilder:
    """ensure(spec) -> a tag; the build of api `slow` waits until `release` is set."""

    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.calls: list[str] = []
        self.slow_started = threading.Event()
        self.release = threading.Event()

    def ensure(self, spec) -> str:
        self.calls.append(spec.name)
        if spec.name == "slow":
            self.slow_started.set()
            assert self.release.wait(10)
        tag = f"cortexd/{spec.name}:{len(self.calls)}"
        self.engine.containers.images.add(tag)
        return tag


def backend_with_fakes(log_dir=None) -> tuple[DockerBackend, FakeEngine, FakeBuilder]:
    engine = FakeEngine()
    backend = DockerBackend(instance="test", client=engine, log_dir=log_dir)
    builder = FakeBuilder(engine)
    backend._builder = builder
    return backend, engine, builder


async def test_start_reuses_a_prepared_image_while_another_build_holds_the_variant_lock(tmp_path):
    backend, engine, builder = backend_with_fakes()
    fast, slow = make_spec(tmp_path, "fast"), make_spec(tmp_path, "slow")
    await backend.ensure_image(fast)
    assert builder.calls == ["fast"]

    # a long build of another API on the same (python, cpu) image variant
    building = asyncio.ensure_future(backend.ensure_image(slow))
    assert await asyncio.to_thread(builder.slow_started.wait, 5)
    try:
        info = await asyncio.wait_for(backend.start(fast, "fast-1"), 5)
        assert info.api == "fast" and info.state == "running"
        assert engine.containers.get("cortexd-test-fast-1").kwargs["image"] == "cortexd/fast:1"
        assert builder.calls == ["fast", "slow"]  # no second build for fast
        assert not building.done()
    finally:
        builder.release.set()
        await building
    # a spec whose image is not known yet takes the lock and builds
    await backend.start(make_spec(tmp_path, "other"), "other-1")
    assert builder.calls == ["fast", "slow", "other"]


async def test_a_remembered_image_that_was_removed_is_prepared_again(tmp_path):
    backend, engine, builder = backend_with_fakes()
    spec = make_spec(tmp_path, "fast")
    await backend.ensure_image(spec)
    engine.containers.images.clear()  # docker rmi
    info = await backend.start(spec, "fast-1")
    assert info.state == "running" and builder.calls == ["fast", "fast"]
    assert engine.containers.get("cortexd-test-fast-1").kwargs["image"] == "cortexd/fast:2"


async def test_stopped_and_vanished_replicas_are_forgotten(tmp_path):
    backend, engine, _ = backend_with_fakes(log_dir=tmp_path / "logs")
    backend._ensure_pump = lambda info, cid: backend._replica_api.__setitem__(info.replica_id, info.api)
    spec = make_spec(tmp_path, "fast")
    for rid in ("fast-1", "fast-2", "fast-3"):
        await backend.start(spec, rid)
    assert set(backend._replica_api) == {"fast-1", "fast-2", "fast-3"}

    await backend.stop("fast-1")
    assert "fast-1" not in backend._replica_api and backend.log_path("fast-1") is None
    engine.containers.by_name.pop("cortexd-test-fast-2")  # removed outside cortexd
    listed = await backend.list()
    assert [i.replica_id for i in listed] == ["fast-3"]
    assert set(backend._replica_api) == {"fast-3"}
    assert backend.log_path("fast-3") == str(tmp_path / "logs" / "fast" / "fast-3.log")


async def test_pumps_of_gone_replicas_are_dropped(tmp_path):
    backend, _, _ = backend_with_fakes(log_dir=tmp_path / "logs")
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    backend._pumps["old-1"] = finished
    backend._replica_api["old-1"] = "old"
    await backend.list()
    assert backend._pumps == {} and backend._replica_api == {}


async def test_a_cancelled_start_still_finishes_and_settle_waits_for_it():
    backend = DockerBackend(instance="t", client=object())
    release = threading.Event()
    created = []

    def slow_create():
        release.wait(5)
        created.append("container")
        return {"Id": "x"}

    task = asyncio.ensure_future(backend._start_call("starting a replica", slow_create))
    await asyncio.sleep(0.05)
    task.cancel()  # the daemon shutting down cancels the reconcile pass mid-start
    with pytest.raises(asyncio.CancelledError):
        await task
    settling = asyncio.ensure_future(backend.settle())
    await asyncio.sleep(0.05)
    assert not settling.done()  # the container is still being created
    release.set()
    await asyncio.wait_for(settling, 5)
    assert created == ["container"]  # so the final list() sees it, and stops it


async def test_builds_run_on_daemon_threads_so_shutdown_does_not_wait_for_them():
    backend = DockerBackend(instance="t", client=object())
    seen = []

    def build():
        seen.append(threading.current_thread().daemon)
        return "tag"

    assert await backend._call_detached("preparing", build) == "tag"
    assert seen == [True]

    def failing():
        raise docker.errors.APIError("boom")

    with pytest.raises(Exception, match="boom"):
        await backend._call_detached("preparing", failing)
