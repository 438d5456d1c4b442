"""DockerBackend's bookkeeping with a fake engine: image tags reused, replicas forgotten.

FakeEngine implements cortexd's own engine seam (docker_engine.DockerEngine: one
method per call the backend makes), so nothing here knows docker-py's client
shape; it only raises docker-py's ImageNotFound where the real engine would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from cortexd.backends.container_args import LABEL_REPLICA
from cortexd.backends.docker import DockerBackend
from cortexd.backends.docker_engine import DockerEngine
from tests.builders import make_spec


@pytest.fixture(autouse=True)
def non_root_replicas(monkeypatch):
    # as root the backend checks that uid 10001 can read the project (tmp_path cannot be)
    monkeypatch.setattr("cortexd.backends.docker.container_user", lambda uid, gid: "1000:1000")


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
        self.engine.images.add(tag)
        return tag


class FakeEngine(DockerEngine):
    """Containers as dicts of create() arguments; every method of the seam is overridden."""

    def __init__(self):
        super().__init__(client=object())  # never used: each call the backend makes is faked below
        self.containers: dict[str, dict[str, Any]] = {}  # name -> create args
        self.images: set[str] = set()
        self.networks: dict[str, Mapping[str, Any]] = {}
        self.builder = FakeBuilder(self)
        self.log_release: dict[str, threading.Event] = {}  # container id -> follow_logs ends when set

    @property
    def local(self) -> bool:
        return True

    def info(self) -> Mapping[str, Any]:
        return {"OperatingSystem": "Debian GNU/Linux 12 (bookworm)", "SecurityOptions": []}

    def image_builder(self, base_image, progress, **options) -> FakeBuilder:
        return self.builder

    def network_attrs(self, name: str) -> Mapping[str, Any] | None:
        return self.networks.get(name)

    def create_network(self, name, options, labels) -> bool:
        self.networks[name] = {"Name": name, "Driver": "bridge", "Options": dict(options)}
        return True

    def _attrs(self, args: Mapping[str, Any]) -> dict[str, Any]:
        labels = args["labels"]
        return {"Id": f"id-{labels[LABEL_REPLICA]}", "Name": "/" + args["name"],
                "Config": {"Labels": labels, "Image": args["image"]}, "State": {"Status": "running"}}

    def run_container(self, create_args, archive_dir, archive) -> Mapping[str, Any]:
        if create_args["image"] not in self.images:
            raise docker.errors.ImageNotFound(f"No such image: {create_args['image']}")
        self.containers[create_args["name"]] = dict(create_args)
        return self._attrs(create_args)

    def remove_container(self, name: str, timeout: float) -> None:
        self.containers.pop(name, None)

    def list_containers(self, filters) -> list[Mapping[str, Any]]:
        return [self._attrs(args) for args in self.containers.values()]

    def cpu_seconds(self, name: str) -> float | None:
        return 1.5 if name in self.containers else None

    def container_logs(self, name: str, tail: int | None = None) -> bytes:
        return b"line 1\nline 2\n" if name in self.containers else b""

    @contextlib.contextmanager
    def follow_logs(self, container_id: str, since: float | None = None) -> Iterator[Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            yield b"serving\n"
            release = self.log_release.get(container_id)
            if release is not None:
                assert release.wait(10)

        yield chunks()

    def close(self) -> None:
        pass


def backend_with_fakes(log_dir=None) -> tuple[DockerBackend, FakeEngine, FakeBuilder]:
    engine = FakeEngine()
    return DockerBackend(instance="test", engine=engine, log_dir=log_dir), engine, engine.builder


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
        assert engine.containers["cortexd-test-fast-1"]["image"] == "cortexd/fast:1"
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
    engine.images.clear()  # docker rmi
    info = await backend.start(spec, "fast-1")
    assert info.state == "running" and builder.calls == ["fast", "fast"]
    assert engine.containers["cortexd-test-fast-1"]["image"] == "cortexd/fast:2"


def holds(path: str, text: str) -> bool:
    try:
        return text in Path(path).read_text()
    except FileNotFoundError:
        return False


async def wait_for_log(path: str, text: str) -> None:
    """Until the copy thread wrote `text` (bounded: 2 s)."""
    for _ in range(200):
        if await asyncio.to_thread(holds, path, text):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{text!r} never reached {path}")


async def test_stopped_and_vanished_replicas_are_forgotten(tmp_path):
    backend, engine, _ = backend_with_fakes(log_dir=tmp_path / "logs")
    spec = make_spec(tmp_path, "fast")
    for rid in ("fast-1", "fast-2", "fast-3"):
        await backend.start(spec, rid)
        path = backend.log_path(rid)
        assert path == str(tmp_path / "logs" / "fast" / f"{rid}.log")
        await wait_for_log(path, "serving")  # the container's output, copied

    await backend.stop("fast-1")
    assert "cortexd-test-fast-1" not in engine.containers and backend.log_path("fast-1") is None
    engine.containers.pop("cortexd-test-fast-2")  # removed outside cortexd
    listed = await backend.list()
    assert [i.replica_id for i in listed] == ["fast-3"]
    assert backend.log_path("fast-2") is None
    assert backend.log_path("fast-3") == str(tmp_path / "logs" / "fast" / "fast-3.log")
    assert await backend.logs("fast-3") == ["line 1", "line 2"]
    assert await backend.cpu_seconds(["fast-2", "fast-3"]) == {"fast-3": 1.5}


async def test_a_replica_whose_log_copy_still_runs_is_kept_although_not_listed(tmp_path):
    # a live copy means a container that start() created after the listing was read
    backend, engine, _ = backend_with_fakes(log_dir=tmp_path / "logs")
    release = engine.log_release["id-new-1"] = threading.Event()
    await backend.start(make_spec(tmp_path, "new"), "new-1")
    await wait_for_log(backend.log_path("new-1"), "serving")
    engine.containers.clear()  # a listing read before the container existed
    await backend.list()
    assert backend.log_path("new-1") is not None
    release.set()  # the container ended: its copy ends
    for _ in range(200):
        await backend.list()
        if backend.log_path("new-1") is None:
            break
        await asyncio.sleep(0.01)
    assert backend.log_path("new-1") is None


async def test_a_cancelled_start_still_finishes_and_settle_waits_for_it():
    backend, _, _ = backend_with_fakes()
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
    backend, _, _ = backend_with_fakes()
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
