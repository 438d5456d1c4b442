"""The Docker backend against the real engine: images, a serving replica, its lockdown, exits.

What a user sees: a prediction answered from a container that can only be
reached on loopback, runs unprivileged on a read-only project, reports kills
and OOM kills; a second deploy with the same requirements builds nothing;
failures say what failed and what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time

import aiohttp
import pytest

from cortexd.backends.base import ReplicaInfo
from cortexd.backends.container_args import container_name
from cortexd.backends.docker import DockerBackend
from cortexd.errors import BackendError
from tests.builders import MNT_PROJECT_PREDICTOR, echo_project, make_spec

pytestmark = pytest.mark.timeout(600)


async def wait_ready(backend: DockerBackend, replica_id: str, info: ReplicaInfo, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if any(r.replica_id == replica_id and r.state == "exited" for r in await backend.list()):
                logs = "\n".join(await backend.logs(replica_id, tail=30))
                raise AssertionError(f"replica {replica_id} exited before it was ready:\n{logs}")
            try:
                async with session.get(f"http://{info.host}:{info.port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25)
    raise AssertionError(f"replica at {info.host}:{info.port} not ready within {timeout} s")


async def post(info: ReplicaInfo, path: str, payload: dict) -> tuple[int, dict]:
    url = f"http://{info.host}:{info.port}{path}"
    async with aiohttp.ClientSession() as session, session.post(url, json=payload) as r:
        return r.status, json.loads(await r.text())


async def wait_state(backend: DockerBackend, replica_id: str, state: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for info in await backend.list():
            if info.replica_id == replica_id and info.state == state:
                return info
        await asyncio.sleep(0.2)
    raise AssertionError(f"replica {replica_id} never reached state {state!r}")


async def test_replica_serves_from_a_locked_down_container_and_reports_its_exit(built, backend, docker_client):
    spec = make_spec(built.project, cpu=0.5, mem=256 * 2**20, env={"FROM_SPEC": "from env"})
    info = await backend.start(spec, "echo-r1")
    # addressed on the cortexd network (the host reaches containers there; a dead one refuses
    # connections instead of docker-proxy's accept-then-reset); also published on loopback only
    ip = docker_client.containers.get(container_name(backend.instance, "echo-r1")).attrs[
        "NetworkSettings"]["Networks"]["cortexd"]["IPAddress"]
    assert (info.host, info.port) == (ip, 8888)
    assert (info.api, info.replica_id, info.spec_hash) == ("echo", "echo-r1", spec.spec_hash)

    await wait_ready(backend, info.replica_id, info)
    status, body = await post(info, "/echo", {"a": 1})
    assert status == 200
    assert body["greeting"] == "hi" and body["echo"] == {"a": 1}
    assert body["from_env"] == "from env" and body["from_dotenv"] == "from .env"
    assert body["uid"] != 0
    assert body["project_writable"] is False  # the project is mounted read-only

    c = docker_client.containers.get(container_name(backend.instance, "echo-r1"))
    attrs = c.attrs
    assert attrs["Config"]["Labels"]["cortexd.api"] == "echo"
    assert attrs["Config"]["Labels"]["cortexd.replica"] == "echo-r1"
    assert attrs["Config"]["Labels"]["cortexd.spec-hash"] == spec.spec_hash
    assert attrs["Config"]["Labels"]["cortexd.managed"] == "true"
    assert attrs["Config"]["Labels"]["cortexd.instance"] == backend.instance
    bindings = attrs["NetworkSettings"]["Ports"]["8888/tcp"]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    assert int(bindings[0]["HostPort"]) > 0
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == str(built.project))
    assert mount["Source"] == str(built.project) and mount["RW"] is False
    assert attrs["Config"]["User"] not in ("", "0", "root")
    assert "no-new-privileges" in attrs["HostConfig"]["SecurityOpt"]
    assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 256 * 2**20

    # a kill from outside shows up as an exited replica with its exit code
    c.kill()
    exited = await wait_state(backend, "echo-r1", "exited")
    assert exited.exit_code == 137 and exited.oom_killed is False
    assert "echo predictor loaded" in await backend.logs("echo-r1")

    await backend.stop("echo-r1", timeout=2)
    assert [r for r in await backend.list() if r.replica_id == "echo-r1"] == []
    await backend.stop("echo-r1")  # stopping what is gone is not an error


async def test_oom_kill_is_reported(built, backend):
    spec = make_spec(built.project, name="hog", mem=96 * 2**20)
    info = await backend.start(spec, "hog-r1")
    await wait_ready(backend, info.replica_id, info)
    with pytest.raises(aiohttp.ClientError):
        await post(info, "/hog", {"allocate_mb": 400})
    exited = await wait_state(backend, "hog-r1", "exited")
    assert exited.oom_killed is True


async def test_stop_is_graceful_and_logs_are_readable(built, backend):
    info = await backend.start(make_spec(built.project), "echo-r2")
    await wait_ready(backend, info.replica_id, info)
    assert "echo predictor loaded" in await backend.logs("echo-r2")
    assert len(await backend.logs("echo-r2", tail=1)) == 1
    assert backend.log_path("echo-r2") is None
    t0 = time.monotonic()
    await backend.stop("echo-r2", timeout=60)
    # the runtime stopped on SIGTERM (about a second), it was not killed at the 60 s deadline;
    # the bound is far from both, so a loaded machine does not move the answer
    assert time.monotonic() - t0 < 45
    assert await backend.list() == []


async def test_second_ensure_image_with_same_requirements_builds_nothing(built, base_image, docker_client):
    lines: list[str] = []
    fresh = DockerBackend(instance="tests-rebuild", base_image=base_image, progress=lines.append)
    try:
        await fresh.ensure_image(make_spec(built.project))
        tag = await fresh.image_for(make_spec(built.project))
    finally:
        await fresh.close()
    # the same image and no build step said: nothing was built (outcomes, not a timing)
    assert tag == built.tag and tag.startswith("cortexd-python-cpu-deps:")
    assert docker_client.images.get(tag).id == built.image_id
    assert not [line for line in lines if line.startswith("building")]


async def test_changed_requirements_get_their_own_layer(built, backend, shared_dir, docker_client):
    project = echo_project(shared_dir / "other-reqs", requirements="numpy>=1.20\n")
    tag = await backend.image_for(make_spec(project, name="other"))
    assert tag.startswith("cortexd-python-cpu-deps:") and tag != built.tag
    # both layers sit on the same predictor image
    history = {h["Id"] for h in docker_client.api.history(tag)}
    base_layers = {h["Id"] for h in docker_client.api.history(built.tag)} - {"<missing>"}
    assert (base_layers - {built.image_id}) & history


async def test_build_failure_names_the_failing_step_and_pip_error(backend, shared_dir):
    project = echo_project(shared_dir / "broken", requirements="cortexd-no-such-package-xyz==0.0.1\n")
    with pytest.raises(BackendError) as e:
        await backend.ensure_image(make_spec(project, name="broken"))
    msg = str(e.value)
    first_line = msg.splitlines()[0]
    assert first_line.startswith("building the image of api 'broken' failed")
    assert " at Step " in first_line and ": RUN " in first_line
    assert "No matching distribution found for cortexd-no-such-package-xyz==0.0.1" in msg


async def test_custom_image_without_the_runtime_is_refused(backend, base_image, shared_dir):
    project = echo_project(shared_dir / "custom", requirements=None)
    with pytest.raises(BackendError) as e:
        await backend.ensure_image(make_spec(project, name="custom", image=base_image))
    assert f"predictor.image {base_image}" in str(e.value)
    assert "predictor runtime" in str(e.value)


async def test_gpu_request_without_nvidia_runtime_says_how_to_fix_it(built, backend, docker_client):
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    with pytest.raises(BackendError) as e:
        await backend.start(make_spec(built.project, name="gpu", gpu=1), "gpu-r1", gpu_ids=(0,))
    assert "nvidia-container-toolkit" in str(e.value) and "restart dockerd" in str(e.value)
    assert await backend.list() == []  # the half-created container was removed


@pytest.mark.skipif(os.getuid() != 0, reason="replicas run as the daemon's own user when it is not root")
async def test_project_unreadable_by_the_replica_user_is_refused_with_the_fix(built, backend, tmp_path):
    project = echo_project(tmp_path / "private", requirements=None)
    (tmp_path).chmod(0o700)
    with pytest.raises(BackendError) as e:
        await backend.start(make_spec(project, name="private"), "private-r1")
    assert "cannot read" in str(e.value) and "chmod o+rX" in str(e.value)


async def test_a_container_has_the_project_at_mnt_project_read_only(built, backend, shared_dir):
    # Cortex mounted the project at /mnt/project; Cortex-era predictors open files there (issue 17)
    project = echo_project(shared_dir / "mnt-project")  # the same requirements: the built image
    (project / "predictor.py").write_text(MNT_PROJECT_PREDICTOR)
    (project / "labels.txt").write_text("cat dog\n")
    for f in project.iterdir():
        f.chmod(0o644)
    spec = make_spec(project, name="detector")
    info = await backend.start(spec, "detector-r1")
    await wait_ready(backend, "detector-r1", info)
    status, seen = await post(info, "/detector", {})
    assert status == 200 and seen["labels"] == ["cat", "dog"] and seen["uid"] != 0
    assert seen["write"] == "refused: Read-only file system"
    assert not (project / "planted.txt").exists()
    assert backend.isolation("detector")["project_mount"] == (
        "the project, read-only (a second bind mount)")


def run_as_replica(container, code: str) -> tuple[int, str]:
    """Run Python in the replica's container as its user: what predictor code could do there."""
    code_out = container.exec_run(["python", "-c", code], demux=False)
    return code_out.exit_code, code_out.output.decode("utf-8", "replace")


async def test_replicas_are_confined_pids_read_only_root_and_no_container_to_container_traffic(
        built, backend, docker_client):
    a = await backend.start(make_spec(built.project, name="conf-a"), "conf-a-r1")
    b = await backend.start(make_spec(built.project, name="conf-b"), "conf-b-r1")
    await wait_ready(backend, a.replica_id, a)
    await wait_ready(backend, b.replica_id, b)
    ca = docker_client.containers.get(container_name(backend.instance, "conf-a-r1"))
    cb = docker_client.containers.get(container_name(backend.instance, "conf-b-r1"))

    host = ca.attrs["HostConfig"]
    assert host["PidsLimit"] == 512
    assert host["ReadonlyRootfs"] is True
    assert set(ca.attrs["NetworkSettings"]["Networks"]) == {"cortexd"}
    network = docker_client.networks.get("cortexd")
    assert network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"

    # the root filesystem is read-only; /tmp and HOME are writable (tmpfs)
    code, out = run_as_replica(ca, "open('/written-by-predictor', 'w')")
    assert code != 0 and "Read-only file system" in out
    code, out = run_as_replica(ca, "import os; open('/tmp/x', 'w').write('x');"
                                   "open(os.path.expanduser('~/y'), 'w').write('y'); print('ok')")
    assert code == 0 and "ok" in out, out
    # each tmpfs is bounded (no compute.mem: 1 GiB), not Docker's half of the host's RAM
    code, out = run_as_replica(ca, "import os; print(*(os.statvfs(p).f_blocks * os.statvfs(p).f_frsize "
                                   "for p in ('/tmp', os.path.expanduser('~'))))")
    assert code == 0 and [int(n) for n in out.split()] == [2**30, 2**30], out
    # a fork bomb stops at the pids limit instead of taking the host's pids
    code, out = run_as_replica(ca, textwrap.dedent("""
        import threading, time
        n = 0
        try:
            for _ in range(2000):
                threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                n += 1
        except RuntimeError:
            pass
        print(n)
    """))
    assert code == 0 and 0 < int(out.split()[-1]) < 512, out

    # replica a cannot call replica b's container directly (bypassing the gateway)
    ip_b = cb.attrs["NetworkSettings"]["Networks"]["cortexd"]["IPAddress"]
    code, out = run_as_replica(ca, textwrap.dedent(f"""
        import socket
        s = socket.socket(); s.settimeout(3)
        try:
            s.connect(({ip_b!r}, 8888)); print("reached")
        except OSError as e:
            print("refused", type(e).__name__)
    """))
    assert "refused" in out and "reached" not in out, out
    # while the host reaches both (the gateway's path)
    status, body = await post(b, "/conf-b", {"x": 1})
    assert status == 200 and body["echo"] == {"x": 1}
