"""The README's quickstart, verbatim, as a new user runs it (issue 15).

A copy of the checkout, a fresh venv, then the commands of README.md's Quickstart block, read
from the README itself (`pip install .` included: not editable), on the process backend (the
embedded default where no Docker engine answers), as root and as a freshly created
unprivileged user. Nothing else is set but what a fresh machine would differ in:

- root runs this process's Python (on CI, pyenv's under /root, which no other user can run:
  the replicas cannot have a uid of their own, the API serves anyway and says why); its
  DOCKER_HOST names a socket that does not exist, which is what a machine without Docker is
  to cortexd (CI has an engine, for the Docker tier's run of the same), and its CORTEXD_HOME is
  a folder of the test's, so it never meets a developer's daemon;
- the new user has neither: Docker's socket is closed to them, and their home is new. They make
  their venv with the system's Python, as a user without pyenv would.

tests/docker/test_quickstart_docker.py runs the same commands on Docker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.newcomer import BASE_PATH, SYSTEM_PYTHON, copy_checkout, fresh_root, read_quickstart


def run_quickstart(run, inspect: str = "cortexd get iris-classifier -o json") -> tuple[str, dict]:
    """Each quickstart command through `run(command)`, asserting what a user would look at; just
    before the quickstart's `cortexd down`, `inspect` is run too. Returns (what `up` printed,
    the API as `cortexd get API -o json` showed it)."""
    quick = read_quickstart()
    assert quick.commands[0].startswith("pip install .") and quick.expected
    up_out, api = "", {}
    for command in quick.commands:
        if command.startswith("cortexd down"):
            got = run(inspect)
            assert got.returncode == 0, got.stderr
            api = json.loads(got.stdout)
        result = run(command)
        shown = f"$ {command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        assert result.returncode == 0, shown
        if command.startswith("curl"):
            assert quick.expected in result.stdout, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        up_out = up_out or result.stdout
    return up_out, api


def runnable_by_others(python: Path) -> bool:
    try:
        subprocess.run([str(python), "-c", "pass"], user=65534, group=65534, extra_groups=[],
                       capture_output=True, timeout=30, check=True)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


def quickstart_as_root(prefix: str, **env_extra: str) -> tuple[str, dict, bool]:
    """The quickstart as root (this process's user): a copy of the checkout, a fresh venv of this
    process's Python, the README's commands with a CORTEXD_HOME of the test's own plus
    `env_extra`. Returns (what `up` printed, the API as `cortexd get API -o json` showed it,
    whether other users can run the venv's Python)."""
    root = fresh_root(prefix)
    try:
        checkout = copy_checkout(root / "cortexd")
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CORTEXD_REPLICA_USER", "CORTEXD_HOME")}
        env.update({"PATH": f"{venv / 'bin'}:{BASE_PATH}", "CORTEXD_HOME": str(root / "home"), **env_extra})

        def run(command: str) -> subprocess.CompletedProcess:
            return subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True,
                                  text=True, timeout=900, check=False)

        try:
            up, api = run_quickstart(run)
        finally:
            run("cortexd down")
        return up, api, runnable_by_others(venv / "bin" / "python")
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.mark.xdist_group("newcomer")  # the README's curl (localhost:8888) and its `pip install .`
def test_the_quickstart_serves_as_root_on_the_process_backend():
    up, api, shared_python = quickstart_as_root("cxd-qs-root-", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert "backend process" in up, up
    isolation = api["isolation"]
    if os.geteuid() != 0:
        assert isolation["notice"] is None
    elif not shared_python:
        # pyenv's Python (CI): served as root, and `up` said why once, with the fix
        assert isolation["runs_as"].startswith("root") and not isolation["isolated"], isolation
        assert "Python interpreter" in isolation["notice"], isolation
        assert up.count("note: api 'iris-classifier': replicas run as root") == 1, up
    else:
        assert isolation["isolated"] and "this API's own" in isolation["runs_as"], isolation


@pytest.mark.xdist_group("newcomer")  # the README's curl (localhost:8888) and its `pip install .`
def test_the_quickstart_serves_as_a_new_unprivileged_user(new_user):
    checkout = copy_checkout(new_user.home / "quickstart")
    subprocess.run(["chown", "-R", f"{new_user.uid}:{new_user.gid}", str(checkout)], check=True)
    venv = new_user.home / "qs-venv"
    made = new_user.run(f"{SYSTEM_PYTHON} -m venv {venv}", cwd=new_user.home, env=new_user.env())
    assert made.returncode == 0, made.stderr
    env = new_user.env(PATH=f"{venv / 'bin'}:{BASE_PATH}")

    def run(command: str) -> subprocess.CompletedProcess:
        return new_user.run(command, cwd=checkout, env=env, timeout=600)

    try:
        up, api = run_quickstart(run)
    finally:
        run("cortexd down")
    assert "backend process" in up, up  # Docker's socket is root's and the docker group's
    # a non-root daemon's replicas run as its user, said as it is
    assert api["isolation"]["runs_as"].startswith(f"{new_user.name} (uid {new_user.uid}"), api["isolation"]
    assert api["isolation"]["notice"] is None
    assert api["replica_list"][0]["backend"]["user"] == new_user.name
