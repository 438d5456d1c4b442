"""DaemonSettings: where the daemon's home is, and a home too deep for a unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.errors import UsageError
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


def test_up_flags_come_from_the_settings_table_flag_then_environment_then_default(tmp_path, capsys):
    from cortexd.cli import build_parser
    from cortexd.settings import OPTIONS, configured

    env = {"CORTEXD_HOME": str(tmp_path), "CORTEXD_LOG_FILES": "3", "CORTEXD_REPLICA_USER": "nobody"}
    args = build_parser().parse_args(["up", "--backend", "process", "--port", "9000", "--log-files", "2",
                                      "--log-max-size", "1Mi", "--run-dependencies-sh", "p"])
    s = configured(vars(args), env)
    assert (s.home, s.backend, s.default_local_port, s.log_files, s.log_max_bytes) == (
        tmp_path, "process", 9000, 2, 2**20)  # flags win over the environment
    assert (s.replica_user, s.run_dependencies_sh, s.host, s.metrics_port) == ("nobody", True, "127.0.0.1", 8889)
    # `up --help` lists every flag of the table, with its help
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS.values():
        assert option.flag is None or option.flag in shown
    assert "(default 10Mi: 10 x 2^20; Ki, Mi, Gi are powers of 1024, k, M, G of 1000" in shown
    with pytest.raises(UsageError, match="--port 70000: expected a port number between 1 and 65535"):
        configured(vars(build_parser().parse_args(["up", "--port", "70000"])), env)


def test_environment_settings_keep_their_messages(tmp_path):
    import re

    from cortexd.errors import CortexdError
    from cortexd.settings import configured

    assert configured({}, {"CORTEXD_UPSTREAM_TIMEOUT": "5", "CORTEXD_ENV_CACHE": "rel"}).upstream_timeout == 5.0
    assert configured({}, {"CORTEXD_ENV_CACHE": "rel"}).env_cache == Path.cwd() / "rel"  # absolute
    with pytest.raises(CortexdError, match=re.escape("CORTEXD_UPSTREAM_TIMEOUT='0': expected a positive "
                                                     "number of seconds, e.g. CORTEXD_UPSTREAM_TIMEOUT=60")):
        configured({}, {"CORTEXD_UPSTREAM_TIMEOUT": "0"})
    assert not configured({}, {"CORTEXD_RUN_DEPENDENCIES_SH": "no"}).run_dependencies_sh
    assert configured({}, {"CORTEXD_RUN_DEPENDENCIES_SH": "yes"}).run_dependencies_sh


def test_the_detached_daemon_gets_the_settings_whole(tmp_path):
    import json

    from cortexd.settings import configured

    s = configured({"base_image": "img:1", "metrics_port": 0},
                   {"CORTEXD_HOME": str(tmp_path), "CORTEXD_TMPFS_SIZE": "2Gi", "CORTEXD_ENV_CACHE": "/c"})
    s = s.with_(drain_timeout=3.5)
    doc = json.loads(json.dumps(s.to_json()))
    assert doc["home"] == str(tmp_path) and doc["tmpfs_bytes"] == 2 * 2**30
    assert DaemonSettings.from_json(doc) == s  # what `cortexd _daemon` reads from its stdin


def test_nearest_pins_is_one_option_for_up_deploy_and_the_environment(tmp_path):
    from cortexd.cli import build_parser
    from cortexd.settings import OPTIONS, configured

    assert OPTIONS["nearest_pins"].flag == "--nearest-pins" and OPTIONS["nearest_pins"].env == "CORTEXD_NEAREST_PINS"
    # the flags deploy takes: --cpu-only and --nearest-pins
    assert [n for n, o in OPTIONS.items() if o.deploy] == ["cpu_only", "nearest_pins"]
    env = {"CORTEXD_HOME": str(tmp_path)}
    assert not configured(vars(build_parser().parse_args(["up", "p"])), env).nearest_pins  # exact by default
    assert configured(vars(build_parser().parse_args(["up", "--nearest-pins", "p"])), env).nearest_pins
    assert configured(vars(build_parser().parse_args(["deploy", "--nearest-pins", "p"])), env).nearest_pins
    opted_in = {**env, "CORTEXD_NEAREST_PINS": "1"}
    assert configured(vars(build_parser().parse_args(["deploy", "p"])), opted_in).nearest_pins
    with pytest.raises(SystemExit):  # deploy takes no daemon setting but those two
        build_parser().parse_args(["deploy", "--port", "9000", "p"])


def test_gateway_workers_default_to_the_daemons_gateway_alone_and_are_bounded(tmp_path):
    from cortexd.cli import build_parser
    from cortexd.settings import configured

    env = {"CORTEXD_HOME": str(tmp_path)}
    assert configured(vars(build_parser().parse_args(["up"])), env).gateway_workers == 1
    assert configured(vars(build_parser().parse_args(["up", "--gateway-workers", "8"])), env).gateway_workers == 8
    assert configured({}, {**env, "CORTEXD_GATEWAY_WORKERS": "4"}).gateway_workers == 4
    for wrong, message in [("0", "expected a whole number of workers, at least 1"), ("65", "at most 64")]:
        with pytest.raises(UsageError, match=message):
            configured(vars(build_parser().parse_args(["up", "--gateway-workers", wrong])), env)
