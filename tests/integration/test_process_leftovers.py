"""The process backend against real processes: a previous daemon's leftover replica sessions
are reaped (and only those), and a replica's children die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cortexd.backends.process import ProcessBackend

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def kill_all(pids, popens=()) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    for p in popens:
        p.kill()
        p.wait()


linux_only = pytest.mark.skipif(not os.path.isdir("/proc/self") or not sys.platform.startswith("linux"),
                                reason="needs Linux /proc")

# a stand-in replica: `python -c CODE predictor_runtime --spec FILE`; with a worker, it starts
# one more in its session (as the supervisor does) and prints both pids
FAKE_REPLICA = textwrap.dedent("""
    import subprocess, sys, time
    if "--worker" in sys.argv:
        argv = [a for a in sys.argv[1:] if a != "--worker"]
        w = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
        print(w.pid, flush=True)
    print("ready", flush=True)
    time.sleep(60)
""")


POPENS: list[subprocess.Popen] = []


def fake_replica(*argv: str, worker: bool = False) -> tuple[int, list[int]]:
    """(session leader pid, [worker pids]) of a process that looks like a replica."""
    args = [sys.executable, "-c", FAKE_REPLICA, *argv] + (["--worker"] if worker else [])
    p = subprocess.Popen(args, stdout=subprocess.PIPE, start_new_session=True, text=True)
    POPENS.append(p)
    workers = []
    while (line := p.stdout.readline().strip()) != "ready":
        workers.append(int(line))
    p.stdout.close()
    return p.pid, workers


@pytest.fixture
def popens():
    yield POPENS
    kill_all([], POPENS)
    POPENS.clear()


@linux_only
def test_reap_leftovers_kills_a_previous_daemons_replica_sessions(tmp_path, popens):
    run = tmp_path / "run"
    run.mkdir()
    started = []
    try:
        # r1: supervisor and worker alive; r2: the supervisor is gone, its worker is left
        r1, r1_workers = fake_replica("-m", "predictor_runtime", "--spec", str(run / "r1.json"), worker=True)
        r2, r2_workers = fake_replica("predictor_runtime", "--spec", str(run / "r2.json"), worker=True)
        started += [r1, *r1_workers, r2, *r2_workers]
        os.kill(r2, signal.SIGKILL)
        assert wait_gone([r2])
        (run / "r1.pid").write_text(f"{r1}\n")
        (run / "r2.pid").write_text(f"{r2}\n")

        killed = ProcessBackend(run, tmp_path / "logs").reap_leftovers()

        assert sorted(killed) == sorted([r1, *r1_workers, *r2_workers])
        assert not any(alive(p) for p in started)
    finally:
        kill_all(started)


@linux_only
def test_reap_leftovers_never_kills_a_reused_pid(tmp_path, popens):
    run = tmp_path / "run"
    run.mkdir()
    started = []
    try:
        # session leaders that are not this run_dir's replicas
        other_spec, _ = fake_replica("-m", "predictor_runtime", "--spec", str(tmp_path / "elsewhere.json"))
        not_runtime, _ = fake_replica("--spec", str(run / "b.json"))
        # a replica's pid that is no session leader now (a pid reused by some other process)
        leader, (member,) = fake_replica("-m", "predictor_runtime", "--spec", str(tmp_path / "x.json"),
                                         worker=True)
        started += [other_spec, not_runtime, leader, member]
        (run / "a.pid").write_text(str(other_spec))
        (run / "b.pid").write_text(str(not_runtime))
        (run / "c.pid").write_text(str(member))
        (run / "d.pid").write_text("not a pid")
        (run / "e.pid").write_text("1")

        assert ProcessBackend(run, tmp_path / "logs").reap_leftovers(wait=0) == []
        assert all(alive(p) for p in started)
    finally:
        kill_all(started)


@linux_only
def test_children_get_sigterm_when_their_parent_is_killed(tmp_path):
    # a parent that spawns a child with child_setup() (as replicas are), then is SIGKILLed
    parent_code = textwrap.dedent("""
        import signal, subprocess, sys, time
        from cortexd.backends.isolation import child_setup
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 preexec_fn=child_setup(sig=signal.SIGTERM), start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = int(parent.stdout.readline())
    parent.stdout.close()
    try:
        assert alive(child)
        parent.kill()
        parent.wait()
        assert wait_gone([child]), "the child outlived its SIGKILLed parent"
    finally:
        kill_all([child], [parent])


@linux_only
def test_reap_leftovers_finds_replicas_by_their_private_folder_and_removes_it(tmp_path, popens):
    import tempfile

    run = tmp_path / "run"
    run.mkdir()
    private = Path(tempfile.mkdtemp(prefix="cortexd-replica-r1-"))
    started = []
    try:
        leader, workers = fake_replica("-m", "predictor_runtime", "--spec", str(private / "r1.json"),
                                       worker=True)
        started += [leader, *workers]
        (run / "r1.pid").write_text(f"{leader}\n{private}\n")
        assert sorted(ProcessBackend(run, tmp_path / "logs").reap_leftovers()) == sorted(started)
        assert not private.exists()
    finally:
        kill_all(started)


async def test_a_failed_start_leaves_nothing_behind(tmp_path):
    # issue 15: a start that fails at the spawn (here: an interpreter that is not there) leaves no
    # private folder, cgroup, pid file or process; the error says what failed
    import tempfile

    from cortexd.backends.container_args import instance_for_home
    from cortexd.errors import BackendError
    from tests.builders import echo_project, make_spec

    project = echo_project(tmp_path / "p")
    backend = ProcessBackend(tmp_path / "run", tmp_path / "logs", interpreter=str(tmp_path / "no-python"))
    with pytest.raises(BackendError, match=r"could not start a replica of api 'echo'.*no-python"):
        await backend.start(make_spec(project), "echo-gone")
    assert not list(Path(tempfile.gettempdir()).glob("cortexd-replica-echo-gone-*"))
    assert not (tmp_path / "run" / "echo-gone.pid").exists()
    assert await backend.list() == []
    instance = instance_for_home(str(tmp_path))
    assert not [p for p in Path("/sys/fs/cgroup").glob(f"**/cortexd-{instance}/echo-gone") if p.is_dir()]
    isolation = backend.isolation("echo")  # what it found is said all the same
    assert isolation is not None and "pids" in isolation["limits"]
