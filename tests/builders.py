"""Specs and projects that tests of every tier build: one place, so a new spec field changes one builder.

`api_spec` builds an `APISpec` by hand (no cortex.yaml); `rollout_spec` is the API
the reconciler's tests deploy and roll; `make_spec` is the echo API of the backend
tests and `echo_project` writes the project it points at (a predictor that echoes
what it gets and reports what it can see); `write_project` writes any cortex.yaml with
its files; `iris_project` copies the iris example to serve on a given port;
`run_example_script` makes an example's models with its own script. The
helpers that drive a real daemon (CLI, HTTP, ports): tests/real_daemon.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cortexd.spec.model import (
    APISpec,
    AutoscalingSpec,
    ComputeSpec,
    ModelsSpec,
    NetworkingSpec,
    PredictorSpec,
    UpdateStrategySpec,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

ECHO_PREDICTOR = '''\
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


# a predictor that echoes its payload and logs each request (for `cortexd logs`)
# what Cortex's object detector does (issue 17): labels read in __init__ from /mnt/project, where
# Cortex put the project, by absolute path; predict says whether /mnt/project is writable
MNT_PROJECT_PREDICTOR = """
import os


class PythonPredictor:
    def __init__(self, config):
        with open("/mnt/project/labels.txt") as f:
            self.labels = f.read().split()

    def predict(self, payload):
        try:
            open("/mnt/project/planted.txt", "w").close()
            written = "written"
        except OSError as e:
            written = f"refused: {e.strerror}"
        return {"labels": self.labels, "uid": os.getuid(), "write": written, "mnt": sorted(os.listdir("/mnt")),
                "project_dir": os.environ.get("CORTEX_PROJECT_DIR"), "cwd": os.getcwd()}
"""


LOGGING_ECHO_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        print("echo predictor loaded", flush=True)

    def predict(self, payload):
        print("echo got", payload, flush=True)
        return {"echo": payload}
"""


def api_spec(
    name: str = "api",
    project: str | Path = "/p",
    *,
    raw: dict | None = None,
    project_digest: str | None = None,
    config: dict | None = None,
    env: dict[str, str] | None = None,
    image: str | None = None,
    python_path: str | None = None,
    model_path: str | None = None,
    models: ModelsSpec | None = None,
    compute: ComputeSpec | None = None,
    autoscaling: AutoscalingSpec | None = None,
    update_strategy: UpdateStrategySpec | None = None,
) -> APISpec:
    """A python RealtimeAPI at /`name` whose predictor is `project`/predictor.py, built by hand.

    `raw` is the document the spec hash is computed from: tests that compare hashes pass
    the fields they vary.
    """
    project = str(project)
    return APISpec(
        name=name,
        kind="RealtimeAPI",
        predictor=PredictorSpec(
            type="python", path=f"{project}/predictor.py", python_path=python_path or project,
            model_path=model_path, models=models, config=config or {}, image=image, env=env or {},
        ),
        networking=NetworkingSpec(endpoint=f"/{name}"),
        compute=compute or ComputeSpec(),
        autoscaling=autoscaling or AutoscalingSpec(),
        update_strategy=update_strategy or UpdateStrategySpec(),
        monitoring=None,
        project_dir=project,
        source_file=f"{project}/cortex.yaml",
        source_line=1,
        raw=raw if raw is not None else {"name": name},
        project_digest=project_digest,
    )


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
    """The echo API served from `project` (see `echo_project`), for tests of the backends."""
    raw = {"name": name, "project": str(project), "cpu": cpu, "mem": mem, "gpu": gpu, "image": image}
    return api_spec(name, project, raw=raw, config={"greeting": "hi"}, image=image, env=env,
                    compute=ComputeSpec(cpu=cpu, gpu=gpu, mem=mem))


def rollout_spec(name: str = "api", replicas: int = 1, config: dict | None = None,
                 max_surge: int | str = "25%", max_unavailable: int | str = "25%") -> APISpec:
    """An API that starts `replicas` replicas (autoscaling 1 to 10) and rolls by `max_surge` /
    `max_unavailable`; a different `config` is a new version (another spec hash)."""
    raw = {"name": name, "config": config or {}, "replicas": replicas}
    return api_spec(
        name, "/p", raw=raw, config=config,
        autoscaling=AutoscalingSpec(min_replicas=1, init_replicas=replicas, max_replicas=10),
        update_strategy=UpdateStrategySpec(max_surge=max_surge, max_unavailable=max_unavailable),
    )


def echo_project(root: Path, requirements: str | None = "numpy>=1.24\n") -> Path:
    """The echo predictor's project (no cortex.yaml), readable by a container's unprivileged user."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "predictor.py").write_text(ECHO_PREDICTOR)
    (root / ".env").write_text("# read by the backend\nexport FROM_DOTENV='from .env'\n")
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def write_project(root: Path, yaml_text: str, files: dict[str, str]) -> Path:
    """A project folder: `cortex.yaml` with `yaml_text`, and each of `files` (name: text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cortex.yaml").write_text(yaml_text)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def iris_project(dest: Path, port: int) -> Path:
    """A copy of examples/iris-classifier served on `port`, readable by a container's user."""
    shutil.copytree(EXAMPLES / "iris-classifier", dest)
    text = (dest / "cortex.yaml").read_text().replace(
        "  compute:", f"  networking:\n    local_port: {port}\n  compute:")
    (dest / "cortex.yaml").write_text(text)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def run_example_script(*args: str) -> None:
    """Runs an example's own script (its make_model.py), as its README says; fails with its output."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, timeout=120,
                       env=env)
    assert p.returncode == 0, f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"


def conf_values(conf: str) -> dict[str, list[str]]:
    """pip.conf text -> {key: [values]} (continuation lines are more values)."""
    out: dict[str, list[str]] = {}
    key = None
    for line in conf.splitlines():
        if line.startswith("[") or not line.strip():
            continue
        if line.startswith(" ") and key:
            out[key].append(line.strip())
        else:
            key, _, value = line.partition("=")
            key = key.strip()
            out[key] = [value.strip()]
    return out


# the predictor that answers {"ok": true}, the smallest API a daemon test serves
OK_PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"ok": True}
"""


def realtime_yaml(name: str, port: int, path: str = "predictor.py") -> str:
    """The cortex.yaml of one python RealtimeAPI `name` on `port`."""
    return (f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: {path}\n"
            f"  networking:\n    local_port: {port}\n")


def config_problems(project: Path | str, text: str) -> list[str]:
    """The problems loading `text` as `project`'s cortex.yaml reports (it must report some)."""
    import pytest

    from cortexd.errors import ConfigError
    from cortexd.spec.load import load_documents

    with pytest.raises(ConfigError) as info:
        load_documents(text, "cortex.yaml", str(project))
    return [str(p) for p in info.value.problems]
