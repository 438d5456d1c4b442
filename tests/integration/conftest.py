"""Fixtures of the integration tier: models made by the examples' scripts, model replicas.

The tier's helpers are tests/real_daemon.py (the CLI, HTTP, ports), tests/real_runtime.py
(runtime processes) and tests/builders.py (projects, models); the `cli` and `runtime`
fixtures are in tests/conftest.py; `upstreams` starts stand-in replicas (tests/upstreams.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import EXAMPLES, run_example_script
from tests.real_runtime import ModelReplica
from tests.upstreams import Upstream


@pytest.fixture(scope="session")
def onnx_files(tmp_path_factory) -> dict[str, Path]:
    """Two iris ONNX models (logistic regression, decision tree) made by the example's script."""
    out = tmp_path_factory.mktemp("onnx-models")
    for kind in ("logreg", "tree"):
        run_example_script(str(EXAMPLES / "onnx-iris" / "make_model.py"), "--out", str(out / kind), "--kind", kind)
    return {kind: out / kind / "iris.onnx" for kind in ("logreg", "tree")}


@pytest.fixture(scope="session")
def tf_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tf-models") / "iris"
    run_example_script(str(EXAMPLES / "tensorflow-iris" / "make_model.py"), "--out", str(out))
    return out


@pytest.fixture
def replica(tmp_path):
    started: list[ModelReplica] = []

    def start(*args, **kw) -> ModelReplica:
        r = ModelReplica(tmp_path, *args, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


@pytest.fixture
async def upstreams():
    """Start stand-in replicas (tests/upstreams.py Upstream) by name; stopped after the test."""
    started: list[Upstream] = []

    async def start(name: str) -> Upstream:
        up = await Upstream(name).start()
        started.append(up)
        return up

    yield start
    for up in started:
        await up.stop()
