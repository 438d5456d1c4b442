"""pip against uv for a project environment, as the process backend builds it (run by hand).

    python bench/environments.py [--requirements "six==1.16.0 tomli-w dill pandas"] [--runs 2]

For each installer: a cold build (empty package cache: PIP_CACHE_DIR / UV_CACHE_DIR point
at a new folder) and warm builds (the cache kept, a new environment each time), through
cortexd.backends.environments.ProjectEnvironments (use_uv=False is pip), so the numbers
are those of `cortexd up` with a changed requirements.txt. An unchanged one builds
nothing at all (the environment is found by digest). Prints seconds per build and what
the environment holds, so that both installers can be checked to give the same packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cortexd.backends.environments import ProjectEnvironments
from cortexd.spec import load_config


def project(folder: Path, requirements: list[str]) -> Path:
    folder.mkdir(parents=True)
    (folder / "cortex.yaml").write_text(
        "- name: bench\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n")
    (folder / "predictor.py").write_text("class PythonPredictor:\n    def predict(self, payload):\n        return 1\n")
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return folder


def build(work: Path, use_uv: bool, n: int, requirements: list[str]) -> tuple[float, dict]:
    # a new project folder each time: a new digest, so a new environment
    folder = project(work / f"{'uv' if use_uv else 'pip'}-{n}", requirements + [f"# build {n}"])
    spec = load_config([str(folder)]).apis[0]
    envs = ProjectEnvironments(work / "envs", use_uv=use_uv)
    plan = envs.plan(spec)
    started = time.perf_counter()
    env = asyncio.run(envs.ensure(plan, "bench"))
    took = time.perf_counter() - started
    site = next((env.path / "lib").glob("python*/site-packages"))
    held = sorted("==".join(p.name.removesuffix(".dist-info").rsplit("-", 1)) for p in site.glob("*.dist-info"))
    check = subprocess.run([env.python, "-c", "import aiohttp, numpy; print('runtime ok')"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    return took, {"venv": held, "runtime": check.stdout.strip() or check.stderr.strip()[-200:],
                  "installer": json.loads((env.path / "cortexd-environment.json").read_text())["installer"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requirements", default="six==1.16.0 tomli-w dill pandas")
    parser.add_argument("--runs", type=int, default=2, help="warm builds per installer")
    args = parser.parse_args()
    requirements = args.requirements.split()
    print(f"requirements: {' '.join(requirements)}  (python {sys.version.split()[0]})")
    for use_uv in (False, True):
        with tempfile.TemporaryDirectory(prefix="cxd-envbench-") as tmp:
            work = Path(tmp)
            os.environ["PIP_CACHE_DIR"] = str(work / "pip-cache")
            os.environ["UV_CACHE_DIR"] = str(work / "uv-cache")
            for n in range(args.runs + 1):
                took, what = build(work, use_uv, n, requirements)
                kind = "cold" if n == 0 else "warm"
                print(f"{what['installer']:>3} {kind}: {took:6.2f} s  venv holds {', '.join(what['venv'])}; "
                      f"{what['runtime']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
