"""Fixtures for the Docker tier: a real engine, a predictor image built once per session.

Without an engine these tests skip, unless CORTEXD_REQUIRE_DOCKER=1 (set by
.ci/run), where a missing engine is a failure (tests/docker_engine.py). Images are built on
CORTEXD_BASE_IMAGE, else on the offline base (docker/make-offline-base.sh)
when it is present, else on python:3.11-slim. The specs and projects the tests
build are in tests/builders.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from cortexd.backends.container_args import LABEL_INSTANCE
from cortexd.backends.docker import DockerBackend
from cortexd.backends.images import DEFAULT_BASE_IMAGE, OFFLINE_BASE_IMAGE
from tests.builders import echo_project, make_spec
from tests.docker_engine import engine_or_skip


def pytest_collection_modifyitems(items):
    """The Docker tier is one xdist group: its tests share the engine's image tags, the `built`
    session image and the `cortexd` network (a test with a group of its own keeps that one)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group("docker"))


@pytest.fixture(scope="session")
def docker_client():
    engine_or_skip()
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    chosen = os.environ.get("CORTEXD_BASE_IMAGE")
    if chosen:
        return chosen
    import docker.errors

    try:
        docker_client.images.get(OFFLINE_BASE_IMAGE)
        return OFFLINE_BASE_IMAGE
    except docker.errors.ImageNotFound:
        return DEFAULT_BASE_IMAGE


@pytest.fixture(scope="session")
def shared_dir():
    # not pytest's tmp_path: its parents are 0700, which uid 10001 in a container cannot cross
    d = Path(tempfile.mkdtemp(prefix="cortexd-docker-tests-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True)
class BuiltImage:
    project: Path
    tag: str
    image_id: str
    seconds: float
    progress: tuple[str, ...]


@pytest.fixture(scope="session")
def built(docker_client, base_image, shared_dir) -> BuiltImage:
    """The python predictor image + the project's requirements layer, built once per session."""
    project = echo_project(shared_dir / "echo")
    lines: list[str] = []

    async def build() -> str:
        backend = DockerBackend(instance="tests-build", base_image=base_image, progress=lines.append)
        try:
            return await backend.image_for(make_spec(project))
        finally:
            await backend.close()

    t0 = time.monotonic()
    tag = asyncio.run(build())
    seconds = time.monotonic() - t0
    return BuiltImage(project, tag, docker_client.images.get(tag).id, seconds, tuple(lines))


@pytest.fixture
async def backend(docker_client, base_image):
    """A backend with its own instance label; whatever it leaves running is removed."""
    instance = f"test-{uuid.uuid4().hex[:8]}"
    b = DockerBackend(instance=instance, base_image=base_image)
    yield b
    await b.close()
    for c in docker_client.containers.list(all=True, ignore_removed=True,
                                           filters={"label": f"{LABEL_INSTANCE}={instance}"}):
        c.remove(force=True, v=True)  # v: the replica's spec volume too
