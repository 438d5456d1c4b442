"""CORTEXD_HOME as users write it: relative to where they are, or too deep for a unix socket."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.real_daemon import REPO


def test_up_detached_with_a_relative_home(cli):
    # CORTEXD_HOME=cxd-... in its parent folder (the detached daemon runs in /, where it is not)
    env = {**cli.env, "CORTEXD_HOME": cli.home.name}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cortexd", *args], env=env, cwd=cli.home.parent,
                              capture_output=True, text=True, timeout=120, check=False)

    wrong = Path("/", cli.home.name)  # where a daemon in / would take the relative home to be
    try:
        up = run("up", "-d", "--backend", "process", str(REPO / "examples" / "iris-classifier"))
        assert up.returncode == 0, (up, cli.daemon_log())
        assert (cli.home / "cortexd.sock").exists() and (cli.home / "daemon.log").exists()
        assert cli.status()["daemon"]["backend"] == "process"  # the same daemon, by absolute path
        down = run("down")
        assert down.returncode == 0, down
    finally:
        if (wrong / "cortexd.pid").exists():
            os.kill(int((wrong / "cortexd.pid").read_text()), signal.SIGTERM)
            time.sleep(2)
        shutil.rmtree(wrong, ignore_errors=True)


def test_a_home_too_deep_for_the_control_socket_is_a_clear_error(cli):
    deep = cli.home / ("d" * 110)
    cli.env["CORTEXD_HOME"] = str(deep)
    for args in (["up", "-d", "--backend", "process", str(REPO / "examples" / "iris-classifier")],
                 ["up", "--backend", "process", str(REPO / "examples" / "iris-classifier")],
                 ["get"], ["down"]):
        result = cli(*args, timeout=60)
        assert result.code == 1, (args, result)
        assert "Traceback" not in result.err + result.out, (args, result)
        assert f"{deep}/cortexd.sock" in result.err and "CORTEXD_HOME" in result.err, (args, result)
    assert not deep.exists()  # nothing was started


def test_a_shared_home_another_user_seeded_with_links_is_refused_and_nothing_is_written(cli, tmp_path):
    # a root daemon pointed at a folder another user made and filled with links to root's files
    if os.geteuid() != 0:
        import pytest

        pytest.skip("giving the folder to another user needs root")
    victims = {}
    for name in ("cortexd.pid", "daemon.log"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("root's own\n")
        victim.chmod(0o600)
        victims[name] = victim
    shared = Path(tempfile.mkdtemp(prefix="cxd-shared-"))
    try:
        shared.chmod(0o755)
        for name, victim in victims.items():
            (shared / name).symlink_to(victim)
            os.lchown(shared / name, 65534, 65534)
        os.chown(shared, 65534, 65534)
        cli.env["CORTEXD_HOME"] = str(shared)
        for args in (["up", "-d", "--backend", "process", str(REPO / "examples" / "iris-classifier")],
                     ["up", "--backend", "process", str(REPO / "examples" / "iris-classifier")]):
            result = cli(*args, timeout=60)
            assert result.code == 1, (args, result)
            assert "Traceback" not in result.err + result.out, (args, result)
            assert f"the daemon's home {shared} is owned by uid 65534" in result.err, (args, result)
            assert "CORTEXD_HOME" in result.err, (args, result)
        for victim in victims.values():
            assert victim.read_text() == "root's own\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
        assert sorted(p.name for p in shared.iterdir()) == ["cortexd.pid", "daemon.log"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)
