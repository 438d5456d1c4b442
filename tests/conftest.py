"""Fixtures shared by the tiers that drive a real daemon or runtime (integration, faults, docker).

The suite runs on xdist workers (setup.cfg's addopts). Tests that share something host-wide
(port 8888, Docker names and images, a `pip install .`, a costly session fixture) carry
`pytest.mark.xdist_group("name")`: one group, one worker, one test at a time ("newcomer": the
README's quickstart, port 8888, system_venv; every test under tests/docker: "docker").
A test whose assertions are a rate or a bound in seconds carries `pytest.mark.exclusive`: it
runs while no other test runs (the `exclusive_when_marked` fixture below). Use it sparingly:
the other workers wait meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.real_daemon import CLI
from tests.real_runtime import Runtime

# xdist's workers inherit LINES=24 and COLUMNS=80 from execnet: a CLI a test starts in a pty of
# its own size (the live view) must read the pty's size, as on a user's terminal, not these
for _name in ("LINES", "COLUMNS"):
    os.environ.pop(_name, None)


def pytest_configure(config):
    config.addinivalue_line("markers", "exclusive: runs while no other test of the run does "
                                       "(its assertions are timings that other tests' load would move)")


@pytest.fixture(autouse=True)
def exclusive_when_marked(request, tmp_path_factory):
    """Under xdist, a readers-writer lock over the run's workers (flock on files in the run's
    shared temp folder): each test holds `running` shared, an `exclusive` test holds it alone.
    `gate` is what keeps a waiting exclusive test from being starved: it is held across the wait
    for `running`, and each test passes through it to take its shared hold."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # basetemp is <run's folder>/popen-gwN
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with open(shared / "tests-gate.lock", "a") as gate, open(shared / "tests-running.lock", "a") as running:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(running, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield  # the `running` hold goes when the file closes


@pytest.fixture
def cli():
    # a short path: unix socket paths are limited to ~108 bytes
    home = Path(tempfile.mkdtemp(prefix="cxd-"))
    c = CLI(home)
    yield c
    if (home / "cortexd.sock").exists():
        c("down", timeout=90)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def short_dir():
    """A new folder whose paths fit a unix socket's address (107 bytes, which pytest's tmp_path
    may not leave): the unix hop's tests bind sockets in it."""
    folder = tempfile.mkdtemp(prefix="cx-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def runtime(tmp_path):
    started: list[Runtime] = []

    def start(code: str, **kw) -> Runtime:
        rt = Runtime(tmp_path, code, **kw)
        started.append(rt)
        return rt

    yield start
    for rt in started:
        rt.close()


# -- a local S3 API server (tests/s3_server.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def local_s3():
    from tests.s3_server import LocalS3

    server = LocalS3()
    yield server
    server.stop()


@pytest.fixture
def s3_environment(local_s3, monkeypatch, tmp_path):
    """Sets this process's AWS_* variables to local_s3.environment(keys) (runtimes a test starts
    inherit them), with every credential variable the machine had removed first."""

    def use(keys: bool = False) -> dict[str, str]:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                     "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                     "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            monkeypatch.delenv(name, raising=False)
        env = local_s3.environment(tmp_path, keys)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return env

    return use


# -- a new user's machine (tests/newcomer.py): session-scoped, each install is a real one ---------


@pytest.fixture(scope="session")
def newcomer_root():
    from tests.newcomer import fresh_root

    root = fresh_root("cxd-newcomer-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def new_user(newcomer_root):
    """A freshly created unprivileged user (root only: useradd), removed at the end."""
    from tests.newcomer import can_make_users, create_user, remove_user

    if not can_make_users():
        pytest.skip("making a user needs root and useradd")
    user = create_user(newcomer_root)
    yield user
    remove_user(user)


@pytest.fixture(scope="session")
def system_venv(newcomer_root):
    """A root-owned venv of the system's Python with `pip install .`, in a folder every user can
    enter: what a root daemon needs to run replicas as other uids (pyenv's Python is under /root)."""
    from tests.newcomer import SYSTEM_PYTHON, copy_checkout, install_venv, runnable_by_others

    if not os.path.exists(SYSTEM_PYTHON) or not runnable_by_others(SYSTEM_PYTHON):
        pytest.skip(f"needs {SYSTEM_PYTHON}, runnable by other users")
    checkout = copy_checkout(newcomer_root / "system-checkout")
    return install_venv(SYSTEM_PYTHON, newcomer_root / "system-venv", checkout)
