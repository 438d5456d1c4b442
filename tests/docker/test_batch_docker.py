"""A BatchAPI job on the Docker backend (issue 18): its workers are containers of the API's image,
as its replicas are (user, hardening, the cortexd network, labels), that reach the daemon through
its unix socket bound in (no port published), and are removed when the job ends; a daemon killed
mid-job leaves its worker containers, which the next one removes before it resumes the job."""

from __future__ import annotations

import json
import os
import signal

from cortexd.backends.container_args import LABEL_INSTANCE, LABEL_WORKER, WORKER_SOCKET, instance_for_home
from tests.batch_jobs import batch_api, items, submit, wait_done
from tests.builders import write_project
from tests.real_daemon import free_port, pid_alive, wait_until

SEEN = """
import json, os, time

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.sleep = float(config.get("sleep", 0))

    def predict(self, payload, batch_id):
        time.sleep(self.sleep)
        print("seen " + json.dumps({"uid": os.getuid(), "container": os.path.exists("/.dockerenv"),
                                    "mnt_project": os.path.exists("/mnt/project/predictor.py")}), flush=True)
"""


def workers(docker_client, home) -> list:
    return docker_client.containers.list(all=True, ignore_removed=True, filters={"label": [
        f"{LABEL_INSTANCE}={instance_for_home(home)}", LABEL_WORKER]})


def test_a_jobs_workers_are_containers_of_the_apis_image_and_the_job_succeeds(cli, docker_client, base_image,
                                                                               shared_dir):
    port = free_port()
    project = write_project(shared_dir / "batch-docker", batch_api(port), {"predictor.py": SEEN})
    for p in [project, *project.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # uid 10001 in the container reads it
    cli("up", "-d", "--backend", "docker", "--base-image", base_image, "--wait", "600", str(project),
        timeout=660, check=True)
    try:
        code, job = submit(port, {"workers": 2, "item_list": {"items": items(8), "batch_size": 1},
                                  "config": {"sleep": 1}})
        assert code == 200, job
        running = wait_until(lambda: (found := workers(docker_client, cli.home)) and len(found) == 2 and found,
                             300, "the job's 2 worker containers")
        for container in running:
            attrs = container.attrs
            assert container.labels["cortexd.api"] == "batch" and "cortexd.replica" not in container.labels
            assert attrs["HostConfig"]["PortBindings"] in (None, {}), attrs["HostConfig"]["PortBindings"]
            assert list(attrs["NetworkSettings"]["Networks"]) == ["cortexd"]
            assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
            assert attrs["Config"]["User"] == ("10001:10001" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}")
            (socket,) = [m for m in attrs["Mounts"] if m["Destination"] == WORKER_SOCKET]
            assert socket["Source"] == str(cli.home / "jobs.sock")
        assert cli.status()["apis"] == []  # workers are not replicas

        done = wait_done(port, job["job_id"], 300)
        assert done["status"] == "status_succeeded", (done, cli.daemon_log())
        assert done["batch_metrics"]["succeeded"] == 8
        logs = cli("logs", "batch", job["job_id"], check=True).out
        seen = [json.loads(line.split("seen ", 1)[1]) for line in logs.splitlines() if "seen {" in line]
        assert len(seen) == 8 and all(s["container"] and s["mnt_project"] for s in seen), logs
        wait_until(lambda: not workers(docker_client, cli.home), 60, "the worker containers to be removed")

        # the daemon SIGKILLed mid-job: the next one removes the workers it left and resumes the job
        code, job = submit(port, {"workers": 1, "item_list": {"items": items(6), "batch_size": 1},
                                  "config": {"sleep": 1}})
        (left,) = wait_until(lambda: workers(docker_client, cli.home), 300, "the second job's worker")
        pid = cli.status()["daemon"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, "the daemon to die")
        cli("up", "-d", "--backend", "docker", "--base-image", base_image, "--wait", "120", str(project),
            timeout=180, check=True)
        done = wait_done(port, job["job_id"], 300)
        assert done["status"] == "status_succeeded" and done["batch_metrics"]["succeeded"] == 6, done
        assert left.id not in [c.id for c in workers(docker_client, cli.home)]
    finally:
        cli("down", timeout=120)
    assert not workers(docker_client, cli.home)
