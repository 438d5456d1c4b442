"""The README's quickstart, verbatim, on Docker (issue 15): what tests/integration/test_quickstart.py
runs on the process backend, on a machine whose Docker engine answers (the default backend then).

As root (CI), in a fresh venv of this process's Python, with the commands read from README.md;
its CORTEXD_HOME is a folder of the test's own, so it never meets a developer's daemon. The image
is built on whatever base the daemon finds (the offline base on CI: no registry is reachable).
"""

from __future__ import annotations

import pytest

from tests.integration.test_quickstart import quickstart_as_root


@pytest.mark.xdist_group("newcomer")  # the README's curl (localhost:8888) and its `pip install .`
def test_the_quickstart_serves_on_docker(docker_client):
    up, api, _ = quickstart_as_root("cxd-qs-docker-")
    assert "backend docker" in up, up
    assert "container of its own" in api["isolation"]["runs_as"], api["isolation"]
    assert api["isolation"]["notice"] is None
    assert "note:" not in up, up
