"""Replica logs on the Docker backend: where the container's port really is, and rotation.

The runtime in a container says `serving on http://0.0.0.0:8888`, the container's own
address; on the host 8888 is the gateway's. The copied log opens with the address the
daemon reaches the replica at, which answers.
"""

from __future__ import annotations

import re

from tests.builders import iris_project
from tests.real_daemon import free_port, http, post_json

SAMPLE = {"sepal_length": 5.2, "sepal_width": 3.6, "petal_length": 1.4, "petal_width": 0.3}


def test_replica_log_says_where_the_replica_really_is(cli, docker_client, base_image,
                                                       shared_dir):
    port = free_port()
    project = iris_project(shared_dir / "iris-logs", port)
    cli.env.update(CORTEXD_LOG_MAX_SIZE="256Ki", CORTEXD_LOG_FILES="2")
    cli("up", "-d", "--backend", "docker", "--base-image", base_image, "--wait", "600", str(project),
        timeout=660, check=True)
    assert post_json(f"http://127.0.0.1:{port}/iris-classifier", SAMPLE)[0] == 200
    logs = cli("logs", "iris-classifier", check=True).out
    (note,) = [line for line in logs.splitlines() if "is the container's own" in line]
    m = re.search(r"cortexd reaches this replica at (http://[\d.]+:\d+) ", note)
    assert m and m.group(1) != f"http://127.0.0.1:{port}", note  # not the gateway's address
    assert http("GET", f"{m.group(1)}/healthz")[0] == 200, note  # it is where the replica is
    cli("down", check=True)
