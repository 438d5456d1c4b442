"""/mnt/project on the process backend (issue 17): Cortex put the project there, and Cortex-era
predictors open files by that path (Cortex's pytorch/object-detector opens
/mnt/project/coco_labels.txt in __init__).

A root daemon gives each replica a mount namespace with the project bound read-only at
/mnt/project; a non-root daemon does the same inside a user namespace of the replica's own,
where the kernel allows one; where neither works, `cortexd get API` says why and the
predictor's traceback carries a note with the reason and what to do. The host's /mnt is never
changed. The decisions are fed values in tests/unit/test_project_mount.py; a container reads
/mnt/project in tests/docker/test_docker_backend.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.batch_jobs import items, submit, wait_done
from tests.builders import MNT_PROJECT_PREDICTOR, REPO, write_project
from tests.real_daemon import free_port, post_json

YAML = """
- name: detector
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  networking:
    local_port: {port}
"""


# a BatchAPI's job worker beside it: started as a replica is, so it gets /mnt/project the same way
BATCH_YAML = """
- name: batch
  kind: BatchAPI
  predictor:
    type: python
    path: seen.py
  networking:
    local_port: {port}
"""

SEEN = """
import json, os

class PythonPredictor:
    def __init__(self, config, job_spec):
        with open("/mnt/project/labels.txt") as f:
            self.labels = f.read().split()
        self.out = config["out"]

    def predict(self, payload, batch_id):
        with open(self.out, "a") as f:
            f.write(json.dumps({"labels": self.labels, "uid": os.getuid()}) + "\\n")
"""


def detector_project(root: Path, port: int, batch_port: int | None = None) -> Path:
    yaml = YAML.format(port=port) + (BATCH_YAML.format(port=batch_port) if batch_port else "")
    files = {"predictor.py": MNT_PROJECT_PREDICTOR, "labels.txt": "cat dog\n", "seen.py": SEEN}
    project = write_project(root, yaml, files)
    for p in [root, *root.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return project


def host_mnt() -> list[str] | None:
    return sorted(os.listdir("/mnt")) if os.path.isdir("/mnt") else None


def predicted(port: int) -> dict:
    status, _, body = post_json(f"http://127.0.0.1:{port}/detector", {}, timeout=60)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon makes mount namespaces; this is its test")
def test_a_root_daemons_replica_reads_the_project_at_mnt_project(cli):
    before = host_mnt()
    port = free_port()
    project = detector_project(Path(tempfile.mkdtemp(prefix="cxd-mnt-")), port)
    try:
        up = cli("up", "-d", "--backend", "process", "--wait", "90", str(project))
        assert up.code == 0, up.out + up.err + cli.daemon_log()
        seen = predicted(port)
        assert seen["labels"] == ["cat", "dog"]
        assert seen["write"] == "refused: Read-only file system"  # never writable through the mount
        assert not (project / "planted.txt").exists()
        # the working directory and CORTEX_PROJECT_DIR stay the project's own folder
        assert seen["cwd"] == seen["project_dir"] == str(project)
        # the host's /mnt entries are still there for the replica
        assert set(before or []) <= set(seen["mnt"]) and "project" in seen["mnt"]
        api = cli.api("detector")
        assert api["isolation"]["project_mount"] == "the project, read-only (a mount namespace of each replica's own)"
        assert "/mnt/project: the project, read-only" in cli("get", "detector").out
        assert host_mnt() == before  # nothing was created on the host
    finally:
        cli("down", timeout=90)
        shutil.rmtree(project, ignore_errors=True)
    assert host_mnt() == before


def _user_namespace_blocker(run, python: Path) -> str | None:
    """Why the kernel refuses this user a user namespace (the daemon's own probe), or None."""
    probe = ("import os; from cortexd.backends.mount_namespace import ReplicaMounts; "
             f"print(ReplicaMounts({str(python)!r}).blocker('user') or '')")
    done = run(f"{python} -c \"{probe}\"")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


@pytest.mark.xdist_group("newcomer")  # system_venv's `pip install .`: once, never beside another
def test_a_non_root_daemons_replica_reads_mnt_project_through_a_user_namespace(new_user, system_venv):
    # a real non-root daemon: a fresh user running cortexd installed in a Python every user can run
    before = host_mnt()
    home = new_user.home / "mnt-test"
    port, batch_port = free_port(), free_port()
    project = detector_project(home / "project", port, batch_port)
    subprocess.run(["chown", "-R", f"{new_user.uid}:{new_user.gid}", str(home)], check=True)
    env = new_user.env(CORTEXD_HOME=str(home / "cxd"), DOCKER_HOST="unix:///nonexistent/docker.sock")

    def run(command: str) -> subprocess.CompletedProcess:
        return new_user.run(command, cwd=home, env=env, timeout=150)

    blocker = _user_namespace_blocker(run, system_venv / "python")
    if blocker is not None:
        pytest.skip(f"this kernel refuses an unprivileged user a user namespace: {blocker}")
    try:
        up = run(f"{system_venv / 'cortexd'} up -d --backend process --wait 90 {project}")
        assert up.returncode == 0, up.stdout + up.stderr
        seen = predicted(port)
        assert seen["labels"] == ["cat", "dog"] and seen["uid"] == new_user.uid
        assert seen["write"] == "refused: Read-only file system"  # though the user owns the project
        assert not (project / "planted.txt").exists()
        api = json.loads(run(f"{system_venv / 'cortexd'} get detector -o json").stdout)
        assert "a user and mount namespace of each replica's own" in api["isolation"]["project_mount"]
        # a job's workers too: each enters a namespace of its own before it constructs the predictor
        code, job = submit(batch_port, {"workers": 1, "item_list": {"items": items(2), "batch_size": 1},
                                        "config": {"out": str(home / "seen.jsonl")}})
        assert code == 200, job
        assert wait_done(batch_port, job["job_id"], 120)["status"] == "status_succeeded", job
        seen = [json.loads(line) for line in (home / "seen.jsonl").read_text().splitlines()]
        assert seen == [{"labels": ["cat", "dog"], "uid": new_user.uid}] * 2, seen
    finally:
        run(f"{system_venv / 'cortexd'} down")
    assert host_mnt() == before


def _without_user_namespaces() -> list[str]:
    """A prefix that runs the daemon where user namespaces are refused, without touching the host:
    in a user namespace of the test's own whose user.max_user_namespaces (a per-namespace limit)
    is 0, as root without capabilities (what a non-root daemon has)."""
    if not (shutil.which("unshare") and shutil.which("setpriv")):
        pytest.skip("unshare and setpriv (util-linux) are needed to refuse user namespaces to the daemon")
    check = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"this kernel refuses the test a user namespace: {check.stderr.strip()}")
    return ["unshare", "--user", "--map-root-user", "sh", "-c",
            'echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --bounding-set=-all --inh-caps=-all "$@"',
            "sh"]


def test_where_no_namespace_can_be_made_get_and_the_traceback_say_why_and_what_to_do(cli, tmp_path):
    prefix = _without_user_namespaces()
    port = free_port()
    project = detector_project(tmp_path / "p", port)
    up = subprocess.run([*prefix, sys.executable, "-m", "cortexd", "up", "-d", "--backend", "process",
                         "--wait", "30", str(project)], env=cli.env, cwd=str(REPO),
                        capture_output=True, text=True, timeout=150)
    # the predictor's __init__ opens /mnt/project/labels.txt: it cannot start
    assert up.returncode == 1 and "not serving: detector" in up.stderr, up.stdout + up.stderr
    reason = ("a daemon without CAP_SYS_ADMIN gives each replica a user and mount "
              "namespace of its own, and unshare(CLONE_NEWUSER|CLONE_NEWNS) failed: No space left on device, "
              "because user namespaces are disabled on this host (sysctl user.max_user_namespaces = 0)")
    assert up.stdout.count(f"note: api 'detector': /mnt/project (where Cortex mounted the project) is not "
                           f"available: {reason}; use the Docker backend") == 1, up.stdout
    assert cli.api("detector")["isolation"]["project_mount_available"] is False
    detail = cli("get", "detector").out
    assert f"/mnt/project: not available: {reason}; use the Docker backend" in detail, detail
    # the predictor's traceback, which `get` shows, ends with the note: why, and what to do
    assert "FileNotFoundError: [Errno 2] No such file or directory: '/mnt/project/labels.txt'" in detail, detail
    assert (f"note: /mnt/project (where Cortex mounted the project) is not available to this replica: "
            f"{reason}; use the Docker backend") in detail, detail
