"""DaemonSettings: where the daemon's home is, and a home too deep for a unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.settings import (
    UNIX_SOCKET_PATH_MAX,
    DaemonSettings,
    SocketPathTooLong,
    default_home,
)


def test_a_relative_cortexd_home_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORTEXD_HOME", "state/cxd")
    assert default_home() == tmp_path / "state" / "cxd"
    assert DaemonSettings().socket_path == tmp_path / "state" / "cxd" / "cortexd.sock"
    monkeypatch.setenv("CORTEXD_HOME", "./a/../cxd")
    assert default_home() == tmp_path / "cxd"


def test_cortexd_home_expands_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CORTEXD_HOME", "~/cxd")
    assert default_home() == tmp_path / "cxd"
    monkeypatch.delenv("CORTEXD_HOME")
    assert default_home() == tmp_path / ".cortexd"


def test_a_socket_path_too_long_for_af_unix_is_a_clear_error(tmp_path):
    DaemonSettings(home=tmp_path).check_socket_path()
    fits = Path("/" + "x" * (UNIX_SOCKET_PATH_MAX - len("/cortexd.sock") - 1))
    DaemonSettings(home=fits).check_socket_path()
    deep = Path(f"{fits}y")
    with pytest.raises(SocketPathTooLong, match="shorter") as e:
        DaemonSettings(home=deep).check_socket_path()
    assert f"{deep}/cortexd.sock" in str(e.value) and "CORTEXD_HOME" in str(e.value)
