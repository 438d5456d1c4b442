"""Fixtures for the Docker tier: a real engine, a predictor image built once per session.

Without an engine these tests skip, unless CORTEXD_REQUIRE_DOCKER=1 (set by
.ci/run), where a missing engine is a failure. Images are built on
CORTEXD_BASE_IMAGE, else on the offline base (docker/make-offline-base.sh)
when it is present, else on python:3.11-slim.
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
from cortexd.spec.model import (
    APISpec,
    AutoscalingSpec,
    ComputeSpec,
    NetworkingSpec,
    PredictorSpec,
    UpdateStrategySpec,
)

PREDICTOR = '''\
import os


class PythonPredictor:
    def __init__(self, config):
        self.greeting = config.get("greeting", "hello")
        print("echo predictor loaded", flush=True)

    def predict(self, payload):
        if payload.get("allocate_mb"):
            hog = bytearray(payload["allocate_mb"] * 2**20)
            for i in range(0, len(hog), 4096):
                hog[i] = 1  # touch every page so the memory is really used
        try:
            with open(os.path.join(os.path.dirname(__file__), "written.txt"), "w") as f:
                f.write("x")
            project_writable = True
        except OSError:
            project_writable = False
        return {
            "greeting": self.greeting,
            "echo": payload,
            "uid": os.getuid(),
            "project_writable": project_writable,
            "from_env": os.environ.get("FROM_SPEC"),
            "from_dotenv": os.environ.get("FROM_DOTENV"),
        }
'''


def make_spec(
    project: Path,
    name: str = "echo",
    *,
    cpu: float = 1.0,
    mem: int | None = None,
    gpu: int = 0,
    image: str | None = None,
    env: dict[str, str] | None = None,
) -> APISpec:
    raw = {"name": name, "project": str(project), "cpu": cpu, "mem": mem, "gpu": gpu, "image": image}
    return APISpec(
        name=name,
        kind="RealtimeAPI",
        predictor=PredictorSpec(
            type="python", path=str(project / "predictor.py"), python_path=str(project),
            config={"greeting": "hi"}, image=image, env=env or {},
        ),
        networking=NetworkingSpec(endpoint=f"/{name}"),
        compute=ComputeSpec(cpu=cpu, gpu=gpu, mem=mem),
        autoscaling=AutoscalingSpec(),
        update_strategy=UpdateStrategySpec(),
        monitoring=None,
        project_dir=str(project),
        source_file=str(project / "cortex.yaml"),
        source_line=1,
        raw=raw,
    )


def write_project(root: Path, requirements: str | None = "numpy>=1.24\n") -> Path:
    """A tiny python project that the container's unprivileged user can read."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "predictor.py").write_text(PREDICTOR)
    (root / ".env").write_text("# read by the backend\nexport FROM_DOTENV='from .env'\n")
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def iris_project(dest: Path, port: int) -> Path:
    """A copy of examples/iris-classifier served on `port`, readable by a container's user."""
    repo = Path(__file__).resolve().parents[2]
    shutil.copytree(repo / "examples" / "iris-classifier", dest)
    text = (dest / "cortex.yaml").read_text().replace(
        "  compute:", f"  networking:\n    local_port: {port}\n  compute:")
    (dest / "cortex.yaml").write_text(text)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def _engine_or_skip() -> None:
    reason = DockerBackend.probe()
    if reason is None:
        return
    if os.environ.get("CORTEXD_REQUIRE_DOCKER") == "1":
        pytest.fail(
            f"CORTEXD_REQUIRE_DOCKER=1 but no Docker engine answers: {reason}\n"
            "Provision one with .ci/provision-docker.sh.",
            pytrace=False,
        )
    pytest.skip(f"no Docker engine ({reason}); set CORTEXD_REQUIRE_DOCKER=1 to make this a failure")


@pytest.fixture(scope="session")
def docker_client():
    _engine_or_skip()
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
    project = write_project(shared_dir / "echo")
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
    for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"}):
        c.remove(force=True, v=True)  # v: the replica's spec volume too
