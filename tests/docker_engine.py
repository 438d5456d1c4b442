"""Whether a Docker engine answers, for tests that need one (the Docker tier, some fault tests).

Without an engine they skip, unless CORTEXD_REQUIRE_DOCKER=1 (set by .ci/run), where
a missing engine is a failure.
"""

from __future__ import annotations

import os

import pytest

from cortexd.backends.docker import DockerBackend


def engine_or_skip() -> None:
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
