"""A process replica's files (issue 9.7): HOME persists per API across replica starts (its
~/.cache is downloaded once), TMPDIR is the replica's own, and the in-flight gauge of a
multi-process replica lives in a private folder that is gone once the replica stops. The
gateway reaches a one-process replica on a unix socket in that folder (replica_files.gateway_socket),
and a multi-process one on its port."""

from __future__ import annotations

import json
import os
import socket
import stat
import textwrap
from pathlib import Path

import pytest

from cortexd.backends.replica_files import MAX_SOCKET_PATH, gateway_socket
from tests.builders import write_project
from tests.real_daemon import free_port, post_json

PREDICTOR = textwrap.dedent('''
    import os

    class PythonPredictor:
        def __init__(self, config):
            pass

        def predict(self, payload):
            cache = os.path.join(os.environ["HOME"], ".cache", "model.bin")
            had = os.path.exists(cache)
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with open(cache, "w") as f:
                f.write("weights")
            with open("/proc/self/maps") as f:
                gauges = sorted({line.split()[-1] for line in f if "in-flight" in line})
            return {"home": os.environ["HOME"], "tmpdir": os.environ.get("TMPDIR"),
                    "cache_was_there": had, "gauges": gauges}
''')

YAML = """
- name: files
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
  networking:
    local_port: {port}
"""


def ask(port: int, endpoint: str = "/files") -> dict:
    status, _, body = post_json(f"http://127.0.0.1:{port}{endpoint}", {}, timeout=60)
    assert status == 200, body
    return json.loads(body)


def replica_argvs(api: str) -> list[list[str]]:
    """The command lines of `api`'s replica processes (supervisors and workers) on this machine:
    their --spec is in a private folder named after the API (tests run in parallel: by name)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "predictor_runtime" in argv and any(f"/cortexd-replica-{api}-" in a for a in argv):
            found.append(argv)
    return found


def connected_to(path: str) -> int:
    """How many connected sockets (/proc/net/unix state 03) are on the unix socket at `path`."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[5:6] == ["03"] and line.endswith(" " + path))


def test_home_persists_across_replica_starts_and_the_gauge_goes_with_the_replica(cli, tmp_path):
    port = free_port()
    project = write_project(tmp_path / "p", YAML.format(port=port), {"predictor.py": PREDICTOR})
    cli.env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")  # where a non-root daemon keeps the HOMEs
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    first = ask(port)
    tmpdir = first["tmpdir"]
    assert first["home"] != os.environ.get("HOME") and not first["home"].startswith(str(cli.home))
    assert tmpdir and Path(tmpdir).is_dir() and not first["home"].startswith(tmpdir)
    # the gauge of the two workers: in a folder of the replica's own TMPDIR, not /tmp
    assert len(first["gauges"]) == 1 and first["gauges"][0].startswith(tmpdir + "/"), first
    gauge = Path(first["gauges"][0])
    assert gauge.exists()
    # several processes share the port (SO_REUSEPORT spreads connections over them): no unix socket
    argvs = replica_argvs("files")
    assert len(argvs) == 3 and not any("--unix-fd" in argv for argv in argvs), argvs

    cli("down", check=True)
    assert not gauge.exists() and not gauge.parent.exists()
    assert not Path(tmpdir).exists()  # the replica's private folder went with it

    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    second = ask(port)
    assert second["home"] == first["home"] and second["cache_was_there"], second
    assert second["tmpdir"] != tmpdir
    cli("down", check=True)


def test_the_gateway_reaches_a_one_process_replica_on_a_unix_socket_only_the_daemon_can_reach(cli, tmp_path):
    port = free_port()
    yaml = YAML.replace("name: files", "name: unixhop").replace("    processes_per_replica: 2\n", "")
    project = write_project(tmp_path / "p", yaml.format(port=port), {"predictor.py": PREDICTOR})
    cli.env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    cli("up", "-d", "--backend", "process", "--wait", "90", str(project), check=True)
    ask(port, "/unixhop")
    (argv,) = replica_argvs("unixhop")
    assert "--unix-fd" in argv and "--port" in argv, argv  # the port stays: the daemon's probes use it
    private = Path(argv[argv.index("--spec") + 1]).parent
    folder, sock = private / "gw", private / "gw" / "sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    # the daemon's own folder: a replica of another user cannot reach the socket, nor replace it
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    assert connected_to(str(sock)) >= 1  # the gateway's pooled connection, on the replica's side
    ask(port, "/unixhop")
    cli("down", check=True)
    assert not private.exists()


def test_the_gateway_socket_is_bound_not_listening_and_left_out_where_its_path_is_too_long(tmp_path, short_dir):
    sock = gateway_socket(Path(short_dir))
    assert sock is not None
    with sock, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(f"{short_dir}/gw/sock")  # bound, not listening: the replica listens when ready
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path)) - len("/gw/sock")))
    deep.mkdir()
    assert len(str(deep / "gw" / "sock")) == MAX_SOCKET_PATH + 1
    assert gateway_socket(deep) is None and not (deep / "gw").exists()  # the port, then
