"""End to end on the Docker backend: the real CLI and daemon, real containers, real HTTP.

`cortexd up --backend docker` builds (or reuses) the predictor image, serves
through the gateway, replaces a replica killed with `docker kill`, adopts its
running containers after the daemon itself is killed (container ids unchanged),
and `cortexd down` leaves no container of its own behind.
"""

from __future__ import annotations

import os
import signal
import time

from cortexd.backends.container_args import LABEL_INSTANCE, instance_for_home
from tests.builders import iris_project
from tests.real_daemon import free_port, pid_alive, post_json

SAMPLE = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.4, "petal_width": 0.3}


def ours(docker_client, home) -> list:
    return docker_client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"{LABEL_INSTANCE}={instance_for_home(home)}"})


def test_up_serves_replaces_adopts_and_down_removes(cli, docker_client, base_image, shared_dir):
    port = free_port()
    project = iris_project(shared_dir / "iris-up", port)
    url = f"http://127.0.0.1:{port}/iris-classifier"

    up = cli("up", "-d", "--backend", "docker", "--base-image", base_image, "--wait", "600", str(project),
             timeout=660, check=True)
    assert "live" in up.out, up.out
    snap = cli.status()
    assert snap["daemon"]["backend"] == "docker"
    status, _, body = post_json(url, SAMPLE)
    assert (status, body) == (200, b"setosa")

    (container,) = ours(docker_client, cli.home)
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert all(b["HostIp"] == "127.0.0.1" for v in bindings.values() for b in v), bindings
    assert container.labels["cortexd.api"] == "iris-classifier"
    # replica output comes from the container, through the daemon
    logs = cli("logs", "iris-classifier", check=True).out
    assert logs.strip(), "no replica output"

    # a replica killed behind the daemon's back is replaced
    container.kill()
    snap = cli.wait_for(
        lambda s: s["apis"][0]["status"] == "live" and s["apis"][0]["replicas"]["restarts"] >= 1,
        timeout=120, what="the killed replica to be replaced")
    (replacement,) = [c for c in ours(docker_client, cli.home) if c.status == "running"]
    assert replacement.id != container.id
    assert post_json(url, SAMPLE)[0] == 200

    # the daemon dies; its containers keep serving and a new daemon adopts them
    pid = snap["daemon"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert replacement.id in [c.id for c in ours(docker_client, cli.home) if c.status == "running"]
    cli("up", "-d", "--backend", "docker", "--base-image", base_image, "--wait", "120", str(project),
        timeout=180, check=True)
    snap = cli.status()
    (api,) = snap["apis"]
    assert api["status"] == "live"
    running = [c.id for c in ours(docker_client, cli.home) if c.status == "running"]
    assert running == [replacement.id], "the running container was not adopted as it was"
    assert post_json(url, SAMPLE)[0] == 200

    down = cli("down", timeout=120, check=True)
    assert "stopped" in down.out
    assert ours(docker_client, cli.home) == []
    assert cli("get").code == 3
