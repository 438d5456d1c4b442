"""The daemon's home (cortexd/home.py): refused when another user can write into it or steer the
path to it; files the daemon writes there are never opened through a symbolic link.

The attack end to end (a real `cortexd up -d` into a pre-seeded shared home): tests/integration/test_home.py.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from cortexd.errors import UnsafeHome
from cortexd.home import home_problem, open_nofollow, prepare_home, write_text_nofollow
from cortexd.logfiles import DaemonLogHandler, RotatingLogWriter

OTHER_UID = 65534  # nobody
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def test_a_missing_home_is_made_0700_and_passes(tmp_path):
    home = tmp_path / "a" / "cxd"
    prepare_home(home)
    assert home.is_dir() and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert home_problem(home) is None
    prepare_home(home)  # again: the same home is fine


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777, 0o720])
def test_a_home_others_can_write_is_refused_with_the_fix(tmp_path, mode):
    home = tmp_path / "cxd"
    home.mkdir()
    home.chmod(mode)
    with pytest.raises(UnsafeHome) as e:
        prepare_home(home)
    assert str(home) in str(e.value) and f"chmod go-w {home}" in str(e.value)


@as_root
def test_a_home_another_user_owns_is_refused_and_nothing_is_written_into_it(tmp_path):
    home = tmp_path / "shared"
    home.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    (home / "cortexd.pid").symlink_to(victim)
    os.chown(home, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeHome) as e:
        prepare_home(home)
    assert f"owned by uid {OTHER_UID}" in str(e.value) and "CORTEXD_HOME" in str(e.value)
    assert victim.read_text() == "secret"


@as_root
def test_a_link_on_the_way_that_another_user_owns_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = tmp_path / "cxd"
    link.symlink_to(mine)
    assert home_problem(link) is None  # my own link to my own folder: fine (a home may be a link)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeHome) as e:
        prepare_home(link / "sub")
    assert f"{link}, a symbolic link owned by uid {OTHER_UID}" in str(e.value)
    assert not (mine / "sub").exists()


@as_root
def test_a_home_inside_a_folder_another_user_owns_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeHome) as e:
        prepare_home(theirs / "cxd")
    assert f"inside {theirs}, which uid {OTHER_UID} owns" in str(e.value)
    assert not (theirs / "cxd").exists()  # nothing made in someone else's folder


def test_a_home_inside_a_world_writable_folder_needs_the_sticky_bit(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeHome, match="every user can write into"):
        prepare_home(shared / "cxd")
    shared.chmod(0o1777)  # as /tmp: no one renames another user's entries
    prepare_home(shared / "cxd")


def test_a_home_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "cxd").write_text("")
    assert "not a folder" in home_problem(tmp_path / "cxd")


def test_files_in_the_home_are_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    pid = tmp_path / "cortexd.pid"
    pid.symlink_to(victim)
    with pytest.raises(UnsafeHome, match=f"{pid} is a symbolic link"):
        write_text_nofollow(pid, "123")
    with pytest.raises(UnsafeHome, match=f"rm {pid}"):
        open_nofollow(pid, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    log = tmp_path / "daemon.log"
    log.symlink_to(victim)
    with pytest.raises(UnsafeHome):
        DaemonLogHandler(log)
    replica_log = tmp_path / "api" / "r1.log"
    replica_log.parent.mkdir()
    replica_log.symlink_to(victim)
    with pytest.raises(OSError) as e:  # the process backend words it as a BackendError
        RotatingLogWriter(replica_log)
    assert e.value.errno == errno.ELOOP
    assert victim.read_text() == "keep"
    write_text_nofollow(tmp_path / "real.pid", "123")
    assert (tmp_path / "real.pid").read_text() == "123"
