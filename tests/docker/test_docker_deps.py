"""A Cortex 0.23 project's dependencies on the Docker backend, against the real engine.

The project imports dill without listing it (Cortex's images had it; cortexd's python image
does not), lists a package that only its own pip.conf can find (find-links to the project's
wheels folder) through an include two levels down, installs a vendored wheel by its path,
and has a dependencies.sh: the requirements layer adds dill with the process backend's
notice, carries the includes and the wheel, honours the pip.conf, runs dependencies.sh as
root in the build, and the replica's predict() imports all of it. A second deploy of the
unchanged project builds nothing.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
import zipfile
from pathlib import Path

import docker.errors
import pytest

from cortexd.backends.container_args import LABEL_INSTANCE
from cortexd.backends.docker import DockerBackend
from cortexd.backends.images import ImageBuilder
from tests.builders import make_spec
from tests.docker.test_docker_backend import post, wait_ready

pytestmark = pytest.mark.timeout(600)

PREDICTOR = '''\
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        import cortexd_docker_probe
        import cortexd_vendored_probe
        import dill

        with open("/opt/cortexd/dependencies-sh-ran") as f:
            ran = f.read().strip()
        return {"dill": dill.__version__, "dill_roundtrip": dill.loads(dill.dumps(lambda x: x + 1))(1),
                "probe": cortexd_docker_probe.WHERE, "vendored": cortexd_vendored_probe.WHERE,
                "dependencies_sh": ran}
'''


def wheel(folder: Path, name: str, version: str, source: str) -> None:
    """A minimal pure-Python wheel, as a private index would serve it (no build tools)."""
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: cortexd-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
        for p, d in files.items()) + f"{dist}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{dist}/RECORD", record)


def deps_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "predictor.py").write_text(PREDICTOR)
    # an include two levels down and a vendored wheel named by its path, as Cortex projects had them
    (root / "requirements.txt").write_text("-r reqs/base.txt\n./vendor/cortexd_vendored_probe-1.0-py3-none-any.whl\n")
    (root / "reqs").mkdir()
    (root / "reqs" / "base.txt").write_text("-r pinned.txt\n")
    (root / "reqs" / "pinned.txt").write_text("cortexd-docker-probe==1.0\n")
    wheel(root / "vendor", "cortexd-vendored-probe", "1.0", "WHERE = 'the vendored wheel'\n")
    (root / "pip.conf").write_text("[global]\nfind-links = wheels\n")
    (root / "dependencies.sh").write_text('echo "uid $(id -u)" > /opt/cortexd/dependencies-sh-ran\n')
    wheel(root / "wheels", "cortexd-docker-probe", "1.0", "WHERE = 'the project pip.conf'\n")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


async def test_a_project_importing_a_pre_installed_package_gets_it_added_and_serves(
        built, base_image, docker_client, shared_dir):
    family = ImageBuilder(docker_client, base_image=base_image).plan_runtime("python", "cpu").tag
    with pytest.raises(docker.errors.ContainerError):  # the family image lacks dill
        docker_client.containers.run(family, entrypoint=["python", "-c", "import dill"], remove=True)

    project = deps_project(shared_dir / f"deps-{uuid.uuid4().hex[:6]}")
    spec = make_spec(project, name="deps")
    instance = f"test-{uuid.uuid4().hex[:8]}"
    notices: list[tuple[str, str]] = []
    lines: list[str] = []
    backend = DockerBackend(instance=instance, base_image=base_image, progress=lines.append,
                            notify=lambda message, api: notices.append((api, message)))
    try:
        t0 = time.monotonic()
        tag = await backend.image_for(spec)
        build_seconds = time.monotonic() - t0
        assert tag.startswith("cortexd-python-cpu-deps:")
        assert ("deps", "dill: pre-installed on Cortex 0.23, added") in notices
        assert not [m for _, m in notices if "cortexd-docker-probe" in m or "numpy" in m]

        info = await backend.start(spec, "deps-r1")
        await wait_ready(backend, info.replica_id, info)
        status, body = await post(info, "/deps", {})
        assert status == 200, body
        assert body["dill_roundtrip"] == 2 and body["dill"]
        assert body["probe"] == "the project pip.conf"  # only the project's find-links has it
        assert body["vendored"] == "the vendored wheel"  # a local path, relative to the project
        assert body["dependencies_sh"] == "uid 0"  # ran in the build, as root, as in Cortex
    finally:
        await backend.close()
        for c in docker_client.containers.list(all=True, ignore_removed=True,
                                               filters={"label": f"{LABEL_INSTANCE}={instance}"}):
            c.remove(force=True, v=True)

    # the unchanged project, deployed again by a fresh daemon: the same layer, nothing built
    again_lines: list[str] = []
    fresh = DockerBackend(instance=f"{instance}-again", base_image=base_image, progress=again_lines.append)
    try:
        t0 = time.monotonic()
        assert await fresh.image_for(make_spec(project, name="deps")) == tag
        cached_seconds = time.monotonic() - t0
    finally:
        await fresh.close()
    # the same tag and no build step said: nothing was built (outcomes; the times are only printed)
    assert not [line for line in again_lines if line.startswith("building")]
    print(f"deps layer build {build_seconds:.1f} s, cached {cached_seconds:.1f} s")
