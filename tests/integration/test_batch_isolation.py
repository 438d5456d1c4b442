"""A BatchAPI job's workers are started as its API's replicas are (issue 18): on a root daemon's
process backend they run as the API's own uid, in cgroups of their own, with the project at
/mnt/project, never as root. (Containers: tests/docker/test_batch_docker.py.)"""

from __future__ import annotations

import json
import os

import pytest

from tests.batch_jobs import batch_api, items, submit, wait_done
from tests.builders import write_project
from tests.real_daemon import free_port, readable_by_all, shared_daemon

SEEN = """
import ctypes, json, os

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.out = config["out"]

    def predict(self, payload, batch_id):
        with open("/proc/self/cgroup") as f:
            cgroups = f.read().split()
        seen = {"uid": os.getuid(), "cgroups": cgroups, "mnt_project": os.path.exists("/mnt/project/predictor.py"),
                "worker": os.environ.get("CORTEXD_WORKER"), "home": os.environ.get("HOME"),
                "dumpable": ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)}  # PR_GET_DUMPABLE
        with open(self.out, "a") as f:
            f.write(json.dumps(seen) + "\\n")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root daemon runs workers as another user")
def test_a_root_daemons_job_workers_run_as_the_apis_uid_in_cgroups_of_their_own(system_venv):
    # the daemon from a Python every user can run (pyenv's under /root cannot be: then workers
    # run as root, with the note saying why, as replicas do)
    with shared_daemon(system_venv / "cortexd", "cxd-batch-iso-") as (shared, cli):
        port = free_port()
        readable_by_all(write_project(shared / "p", batch_api(port), {"predictor.py": SEEN}))
        out = shared / "out"
        out.mkdir()
        out.chmod(0o1777)  # the workers' uid writes what it saw here
        cli("up", "-d", "--backend", "process", "--wait", "90", str(shared / "p"), check=True)
        code, job = submit(port, {"workers": 2, "item_list": {"items": items(4), "batch_size": 1},
                                  "config": {"out": str(out / "seen.jsonl")}})
        assert code == 200, job
        assert wait_done(port, job["job_id"], 120)["status"] == "status_succeeded", cli.daemon_log()
        seen = [json.loads(line) for line in (out / "seen.jsonl").read_text().splitlines()]
        uids = {s["uid"] for s in seen}
        assert len(seen) == 4 and len(uids) == 1 and 70000 <= uids.pop() <= 99999, seen
        isolation = json.loads(cli("get", "batch", "-o", "json", check=True).out)["isolation"]
        assert isolation["isolated"] and f"uid {seen[0]['uid']}" in isolation["runs_as"], isolation
        assert f"runs as:    {isolation['runs_as']}" in cli("get", "batch", check=True).out
        assert all(s["mnt_project"] for s in seen), seen
        assert all(s["home"] and s["home"].endswith(f"/{s['uid']}") for s in seen), seen
        # not dumpable, as replicas are: no process of its uid reads its env (secrets, the job's token)
        assert all(s["dumpable"] == 0 for s in seen), seen
        if "cgroup" not in isolation["limits"]["pids"]:
            pytest.skip(f"workers ran as the API's uid; this host gives them no cgroups: {isolation['limits']}")
        for s in seen:  # each in its own cgroup, named by its job and worker
            assert any(f"/{job['job_id']}-{s['worker']}" in line for line in s["cgroups"]), s


HOG = """
class PythonPredictor:
    def __init__(self, config, job_spec):
        pass

    def predict(self, payload, batch_id):
        hog = []
        while True:  # past compute.mem: the kernel kills the worker
            hog.append(bytearray(16 * 2**20))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon puts workers in cgroups that hold compute.mem")
def test_a_worker_past_compute_mem_is_killed_replaced_and_said_oom(cli, tmp_path):
    port = free_port()
    yaml = batch_api(port).replace("  networking:", "  compute:\n    mem: 200Mi\n  networking:")
    project = write_project(tmp_path / "hog", yaml, {"predictor.py": HOG})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    code, job = submit(port, {"workers": 1, "item_list": {"items": items(1), "batch_size": 1}})
    assert code == 200, job
    done = wait_done(port, job["job_id"], 120)
    limits = json.loads(cli("get", "batch", "-o", "json", check=True).out)["isolation"]["limits"]
    if "cgroup" not in limits["memory"]:
        pytest.skip(f"this host gives workers no memory cgroup: {limits['memory']}")
    # its one batch failed after its attempts, each worker killed for memory and replaced
    assert done["status"] == "status_completed_with_failures" and done["batch_metrics"]["failed"] == 1, done
    assert "was killed for memory (oom: compute.mem is its limit)" in cli.daemon_log()
