"""Predictor code cannot drive the daemon (issue 9 item 7) and sees `.env` over `env` (issue 10.5).

A predictor that tries what an attacker would: read CORTEXD_HOME and the daemon's other
variables from its environment, find the control socket (the environment, ~/.cortexd, or the
list of bound unix sockets in /proc/net/unix), connect, and ask GET /status, from its own
process and from a child that left the replica's session (setsid). It returns what happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from tests.builders import write_project
from tests.real_daemon import CLI, REPO, free_port, pid_alive, post_json, readable_by_all, shared_daemon

PROBE = textwrap.dedent('''
    import json, os, socket, subprocess, sys

    PROBE_CHILD = """
    import json, os, socket, sys
    os.setsid()  # leave the replica's session
    out = {}
    for path in json.loads(sys.argv[1]):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(path)
            s.sendall(b"GET /status HTTP/1.0\\\\r\\\\nHost: x\\\\r\\\\n\\\\r\\\\n")
            out[path] = s.recv(200).decode("latin-1").split("\\\\r\\\\n")[0]
        except OSError as e:
            out[path] = type(e).__name__
        finally:
            s.close()
    print(json.dumps(out))
    """


    PROBE_ORPHAN = """
    import json, os, socket, sys, time
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: a new session, then it leaves its own child an orphan
        os.close(read_end)
        os.setsid()
        if os.fork():
            os._exit(0)
        for _ in range(100):  # the grandchild: wait until it is re-parented
            if os.getppid() != child:
                break
            time.sleep(0.02)
        out = {"ppid": os.getppid(), "sid": os.getsid(0)}
        for path in json.loads(sys.argv[1]):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            try:
                s.connect(path)
                s.sendall(b"GET /status HTTP/1.0\\\\r\\\\nHost: x\\\\r\\\\n\\\\r\\\\n")
                out[path] = s.recv(200).decode("latin-1").split("\\\\r\\\\n")[0]
            except OSError as e:
                out[path] = type(e).__name__
            finally:
                s.close()
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    data = b""
    while chunk := os.read(read_end, 65536):
        data += chunk
    print(data.decode())
    """


    PROBE_DAEMONIZE = """
    import os, time
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # a daemon of the predictor's own, out of the replica's tree
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            time.sleep(120)
        os._exit(0)
    os.close(write_end)
    print(os.read(read_end, 32).decode())
    """


    def daemon_environ(paths):
        """What reading /proc/<daemon pid>/environ gives to this predictor, of the daemon's uid."""
        out = {}
        for path in paths:
            try:
                with open(os.path.join(os.path.dirname(path), "cortexd.pid")) as f:
                    pid = int(f.read().strip())
            except (OSError, ValueError) as e:
                out[path] = type(e).__name__
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    out[path] = "read: secret" if b"DAEMON_ONLY_SECRET" in f.read() else "read"
            except OSError as e:
                out[path] = f"refused: {type(e).__name__}"
        return out


    def sockets():
        found = set()
        if os.environ.get("CORTEXD_HOME"):
            found.add(os.path.join(os.environ["CORTEXD_HOME"], "cortexd.sock"))
        found.add(os.path.join(os.path.expanduser("~"), ".cortexd", "cortexd.sock"))
        with open("/proc/net/unix") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[-1].endswith("cortexd.sock"):
                    found.add(parts[-1])
        return sorted(found)


    def ask(path):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(path)
            s.sendall(b"GET /status HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            head, _, body = data.decode("utf-8", "replace").partition("\\r\\n\\r\\n")
            return {"status": head.split("\\r\\n")[0], "body": body[:300]}
        except OSError as e:
            return {"error": type(e).__name__}
        finally:
            s.close()


    class PythonPredictor:
        def __init__(self, config):
            pass

        def predict(self, payload):
            paths = sockets()
            home = os.environ.get("HOME", "")
            try:
                with open(os.path.join(home, "probe"), "w") as f:
                    f.write("x")
                home_writable = True
            except OSError:
                home_writable = False
            child = subprocess.run([sys.executable, "-c", PROBE_CHILD, json.dumps(paths)],
                                   capture_output=True, text=True, timeout=20)
            orphan = subprocess.run([sys.executable, "-c", PROBE_ORPHAN, json.dumps(paths)],
                                    capture_output=True, text=True, timeout=20)
            daemonized = subprocess.run([sys.executable, "-c", PROBE_DAEMONIZE],
                                        capture_output=True, text=True, timeout=20)
            try:  # the project where Cortex put it: readable, never writable (issue 17)
                open("/mnt/project/planted.py", "w").close()
                mnt_write = "written"
            except OSError as e:
                mnt_write = f"refused: {e.strerror}"
            return {
                "uid": os.getuid(),
                "env_keys": sorted(os.environ),
                "cortexd_home": os.environ.get("CORTEXD_HOME"),
                "planted": os.environ.get("DAEMON_ONLY_SECRET"),
                "mode": os.environ.get("MODE"),
                "only_env": os.environ.get("ONLY_ENV"),
                "home": home,
                "home_writable": home_writable,
                "sockets": paths,
                "asked": {p: ask(p) for p in paths},
                "escaped_child": json.loads(child.stdout or "{}") if child.returncode == 0 else child.stderr[-300:],
                "orphan": json.loads(orphan.stdout or "{}") if orphan.returncode == 0 else orphan.stderr[-300:],
                "daemon_environ": daemon_environ(paths),
                "daemonized": int(daemonized.stdout.strip() or 0),
                "mnt_project": [os.path.isfile("/mnt/project/probe.py"), mnt_write],
            }
''')

# the only CORTEXD_* variables a replica gets: the limits the runtime enforces, and why the
# host left it without /mnt/project (issue 17), where it did
REPLICA_SETTINGS = ("CORTEXD_MAX_BODY_SIZE", "CORTEXD_REQUEST_TIMEOUT", "CORTEXD_MNT_PROJECT_UNAVAILABLE")

YAML = """
- name: probe
  kind: RealtimeAPI
  predictor:
    type: python
    path: probe.py
    env:
      MODE: from-env
      ONLY_ENV: kept
  networking:
    local_port: {port}
"""


def deploy(cli: CLI, root: Path) -> tuple[int, Path]:
    port = free_port()
    project = write_project(root, YAML.format(port=port), {
        "probe.py": PROBE,
        ".env": "# Cortex sourced .env after the API's env: it wins\nMODE=from-dotenv\n",
    })
    cli.env["DAEMON_ONLY_SECRET"] = "daemon-secret"  # in the daemon's environment only
    return port, project


def same_uid_without_capabilities() -> list[str]:
    """The prefix a root test runs the daemon under to be what a non-root daemon is to its
    replicas of the same uid (no capabilities: neither CAP_SYS_PTRACE nor any other)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to test a non-root daemon's case as root")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def probe(port: int) -> dict:
    status, _, body = post_json(f"http://127.0.0.1:{port}/probe", {}, timeout=60)
    assert status == 200, body
    return json.loads(body)


def test_a_predictor_gets_none_of_the_daemons_environment_and_is_refused_by_the_control_api(cli, tmp_path):
    # under root the faults tier runs replicas as the daemon's own user (CORTEXD_REPLICA_USER=root,
    # conftest), so only the peer check stands between the predictor and the control socket
    port, project = deploy(cli, tmp_path / "p")
    # as root, the daemon (and so its replicas) run without capabilities: root with any reads
    # every process's /proc files, so this is how a root host tests a non-root daemon's case
    up = subprocess.run([*same_uid_without_capabilities(), sys.executable, "-m", "cortexd", "up", "-d",
                         "--backend", "process", "--wait", "90", str(project)],
                        env=cli.env, cwd=str(REPO), capture_output=True, text=True, timeout=150)
    assert up.returncode == 0, up.stdout + up.stderr
    seen = probe(port)

    assert seen["cortexd_home"] is None and seen["planted"] is None
    # only the runtime's own limits (DaemonSettings.replica_limits), nothing of the daemon's
    assert not [k for k in seen["env_keys"] if k.startswith(("CORTEXD_", "PYTEST"))
                and k not in REPLICA_SETTINGS]
    assert (seen["mode"], seen["only_env"]) == ("from-dotenv", "kept")  # .env over env (10.5)
    assert seen["home_writable"] and seen["home"] != os.environ.get("HOME")
    if "CORTEXD_MNT_PROJECT_UNAVAILABLE" not in seen["env_keys"]:  # (a kernel without user namespaces)
        assert seen["mnt_project"] == [True, "refused: Read-only file system"]
    assert not seen["home"].startswith(str(cli.home))

    socket_path = str(cli.home / "cortexd.sock")
    assert socket_path in seen["sockets"]  # found through /proc/net/unix
    answer = seen["asked"][socket_path]
    assert answer["status"].split()[1] == "403", answer
    assert "does not serve replicas" in answer["body"]
    # a child that left the replica's session is still the replica's
    assert seen["escaped_child"][socket_path].split()[1] == "403", seen["escaped_child"]
    # so is a grandchild that double-forked into a new session: the daemon adopts orphans
    assert isinstance(seen["orphan"], dict), seen["orphan"]
    assert seen["orphan"][socket_path].split()[1] == "403", seen["orphan"]
    # and nothing it runs reads the daemon's environment in /proc
    assert seen["daemon_environ"][socket_path].startswith("refused"), seen["daemon_environ"]
    # the CLI itself still drives the daemon
    assert cli("get", "-o", "json", check=True).code == 0
    # and what the predictor daemonized ends with the daemon (it adopted it)
    daemonized = seen["daemonized"]
    assert daemonized > 0 and pid_alive(daemonized)
    try:
        cli("down", check=True)
        deadline = time.monotonic() + 10
        while pid_alive(daemonized) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(daemonized), "a process the predictor daemonized outlived cortexd down"
    finally:
        with contextlib.suppress(OSError):
            os.kill(daemonized, signal.SIGKILL)


def _python_reachable_by(user: str) -> bool:
    try:
        subprocess.run(["su", "-s", "/bin/sh", user, "-c", f"{sys.executable} -c pass"],
                       check=True, capture_output=True, timeout=30)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


NOSY = """
import os


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        mine = {os.getpid(), os.getppid()}
        seen = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in mine:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                # the holder's replica processes (its spec's path names its api); other tests'
                # runtimes on this host start and stop beside this one under xdist
                if b"predictor_runtime" not in cmdline or b"holder" not in cmdline:
                    continue
            except OSError:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    seen[entry] = "read: secret" if b"HOLDER_SECRET" in f.read() else "read"
            except OSError as e:
                seen[entry] = f"refused: {type(e).__name__}"
        return seen
"""

HOLDER = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return "holding"
"""


def test_a_predictor_cannot_read_another_apis_environment_under_the_same_uid(cli, tmp_path):
    # a non-root daemon's replicas (and a root daemon's, all `nobody`) share one uid: without the
    # runtime making itself non-dumpable, one API's predictor reads another's env (its secrets)
    port = free_port()
    project = write_project(tmp_path / "two", f"""
- name: holder
  kind: RealtimeAPI
  predictor:
    type: python
    path: holder.py
    processes_per_replica: 2
    env:
      HOLDER_SECRET: hunter2
  networking:
    local_port: {port}
- name: nosy
  kind: RealtimeAPI
  predictor:
    type: python
    path: nosy.py
  networking:
    local_port: {port}
""", {"holder.py": HOLDER, "nosy.py": NOSY})
    up = subprocess.run([*same_uid_without_capabilities(), sys.executable, "-m", "cortexd", "up", "-d",
                         "--backend", "process", "--wait", "90", str(project)],
                        env=cli.env, cwd=str(REPO), capture_output=True, text=True, timeout=150)
    assert up.returncode == 0, up.stdout + up.stderr
    status, _, body = post_json(f"http://127.0.0.1:{port}/nosy", {}, timeout=60)
    assert status == 200, body
    seen = json.loads(body)
    # the holder's supervisor and its two workers: none can be read
    assert len(seen) >= 3, seen
    assert all(v.startswith("refused") for v in seen.values()), seen
    assert post_json(f"http://127.0.0.1:{port}/holder", {})[0] == 200  # and the holder still serves


@pytest.mark.xdist_group("newcomer")  # system_venv's `pip install .`: once, never beside another
@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs replicas as another user")
def test_a_root_daemon_runs_each_apis_process_replicas_as_a_uid_of_its_own(system_venv):
    # the daemon from a Python every user can run (a venv of the system's): the default then
    # gives the API a uid of its own (pyenv's Python under /root cannot be: the quickstart
    # tests cover that case, where it serves as root and says why)
    with shared_daemon(system_venv / "cortexd", "cxd-iso-") as (shared, cli):
        port, project = deploy(cli, shared / "p")
        readable_by_all(project)
        result = cli("up", "-d", "--backend", "process", "--wait", "90", str(project))
        assert result.code == 0, result.out + result.err + cli.daemon_log()
        assert "note:" not in result.out, result.out  # isolated: nothing to say
        seen = probe(port)
        assert 70000 <= seen["uid"] <= 99999
        api = cli.api("probe")
        assert api["isolation"]["isolated"] and f"uid {seen['uid']}" in api["isolation"]["runs_as"]
        assert api["replica_list"][0]["backend"]["user"] == f"cortexd-{seen['uid']}"
        assert seen["cortexd_home"] is None and seen["planted"] is None
        # none of the daemon's variables: only the limits the runtime enforces are CORTEXD_*
        assert not [k for k in seen["env_keys"] if k.startswith("PYTEST") or
                    (k.startswith("CORTEXD_") and k not in REPLICA_SETTINGS)]
        socket_path = str(cli.home / "cortexd.sock")
        # the socket is the daemon's (0600, in a 0700 home): the replica's user cannot connect
        assert all("error" in a for a in seen["asked"].values()), seen["asked"]
        assert socket_path not in seen["escaped_child"] or "Error" in seen["escaped_child"][socket_path]
        # its HOME: its own, 0700, named by its uid, kept across starts
        home = Path(seen["home"])
        assert seen["home_writable"] and home.name == str(seen["uid"])
        # the project at /mnt/project: bound before the drop, read-only, and the replica cannot undo it
        assert seen["mnt_project"] == [True, "refused: Read-only file system"]
        assert api["isolation"]["project_mount"] == "the project, read-only (a mount namespace of each replica's own)"
        assert home.stat().st_uid == seen["uid"] and home.stat().st_mode & 0o777 == 0o700


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs replicas as another user")
async def test_a_project_the_replica_user_cannot_read_is_refused_with_the_path_and_the_fix(tmp_path):
    from cortexd.backends.process import ProcessBackend
    from cortexd.errors import BackendError
    from tests.builders import make_spec

    project = tmp_path / "private-project"  # pytest's tmp folders are 0700
    project.mkdir()
    (project / "predictor.py").write_text("")
    backend = ProcessBackend(tmp_path / "run", tmp_path / "logs", replica_user="nobody",
                             interpreter=SYSTEM_PYTHON)
    with pytest.raises(BackendError) as e:
        await backend.start(make_spec(project), "echo-r1")
    msg = str(e.value)
    assert "run as user 'nobody'" in msg and "cannot read" in msg and "chmod" in msg
    assert "--replica-user" in msg
    assert await backend.list() == []
    assert not list(Path(tempfile.gettempdir()).glob("cortexd-replica-echo-r1-*"))  # cleaned up


def test_the_control_api_reads_the_peer_of_its_unix_socket_and_asks_the_backend():
    import socket

    from cortexd.daemon.control import peer_credentials, replica_peer_refusal

    class Transport:
        def __init__(self, sock):
            self.sock = sock

        def get_extra_info(self, name):
            return self.sock if name == "socket" else None

    class Backend:
        def __init__(self, answer):
            self.answer, self.asked = answer, []

        def replica_of_peer(self, pid, uid):
            self.asked.append((pid, uid))
            return self.answer

    class Daemon:  # the ControlledDaemon parts the check uses (cortexd.daemon.seams)
        guarded_pid = None

        def __init__(self, backend):
            self.backend = backend

        def replica_of_peer(self, pid, uid):
            return self.backend.replica_of_peer(pid, uid)

    class DockerLike:
        def replica_of_peer(self, pid, uid):
            return None

    ours, theirs = socket.socketpair(socket.AF_UNIX)
    try:
        assert peer_credentials(Transport(ours)) == (os.getpid(), os.getuid())
        replica = Backend("echo-r1")
        refusal = replica_peer_refusal(Daemon(replica), Transport(ours))
        assert replica.asked == [(os.getpid(), os.getuid())]
        assert "belongs to replica echo-r1" in refusal and "cannot drive cortexd" in refusal
        assert replica_peer_refusal(Daemon(Backend(None)), Transport(ours)) is None
        assert replica_peer_refusal(Daemon(DockerLike()), Transport(ours)) is None  # Docker: no such check
        # a daemon that is a subreaper refuses its descendants, whatever the backend
        guarded = Daemon(DockerLike())
        guarded.guarded_pid = os.getppid()
        assert "descends from the daemon" in replica_peer_refusal(guarded, Transport(ours))
    finally:
        ours.close()
        theirs.close()
    with socket.socket() as tcp:  # not a unix socket: no peer credentials
        assert peer_credentials(Transport(tcp)) is None
