"""An independent reader of the exported manifests runs them here (issue 18): Debian's podman.

`cortexd build --push` pushes a RealtimeAPI's and a BatchAPI's images to the local registry
(127.0.0.1:5000, plain HTTP: podman is told --tls-verify=false), `cortexd export kubernetes
--job` writes the manifests, and `podman kube play` runs them from the pushed images: the
Deployment's pod with its Secret, user, read-only root, port and probe as written answers a
prediction; each index of the batch Job runs as the Job controller would run it, and together they
predict every item once. Podman 4.3 (Debian 12) needs four things said here, none of them in the
manifests' meaning:
- its default ulimits (nproc, nofile) may exceed a CI container's hard limits ("error setting
  rlimit type 6: operation not permitted"): a containers.conf of its own sets lower ones;
- it stores a `kind: Secret` document as YAML and then reads it as JSON ("secret ... is not valid
  JSON"): the Secret's values are given to `podman secret create` as the JSON map it reads;
- it plays no `kind: Job`: each index is the Job's pod template as a Pod, with
  JOB_COMPLETION_INDEX, as the Job controller makes it;
- it publishes a containerPort on every interface at the same port: the test adds hostIP
  127.0.0.1 and a free hostPort (a cluster publishes nothing; a Service routes to the port).
Its health check for an httpGet probe runs curl inside the container, which the image does not
have: the test checks that the probe is carried (path, port, period) and probes it from here.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.docker.test_build_push import REGISTRY, registry_or_skip, wait_ready
from tests.real_daemon import CLI, free_port, post_json

REALTIME = """
import os

class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        try:
            open("written.txt", "w").close()
            root_writable = True
        except OSError:
            root_writable = False
        return {"uid": os.getuid(), "gid": os.getgid(), "root_writable": root_writable,
                "token": os.environ.get("TOKEN"), "got": payload}
"""
BATCH = """
import json, os

class PythonPredictor:
    def __init__(self, config, job_spec):
        self.job_spec = job_spec

    def predict(self, payload, batch_id):
        print("BATCH " + json.dumps({"items": payload, "index": os.environ["JOB_COMPLETION_INDEX"],
                                     "uid": os.getuid(), "token": os.environ.get("TOKEN")}), flush=True)

    def on_job_complete(self):
        print("COMPLETE " + self.job_spec["job_id"], flush=True)
"""


def podman_or_skip() -> str:
    found = shutil.which("podman")
    if found:
        return found
    reason = "podman is not installed (Debian: apt-get install podman catatonit)"
    if os.environ.get("CORTEXD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}; .ci/provision-docker.sh installs it", pytrace=False)
    pytest.skip(reason)


@dataclass
class Podman:
    binary: str
    conf: Path
    played: list[str] = field(default_factory=list)  # pods, removed at the end
    images: set[str] = field(default_factory=set)

    def __call__(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        p = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True, timeout=timeout,
                           check=False)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} -> {p.returncode}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
        return p

    def play(self, doc: dict, folder: Path, *extra: str) -> None:
        path = folder / f"{doc['metadata']['name']}.play.yaml"
        path.write_text(yaml.safe_dump(doc))
        self.played.append(doc["metadata"]["name"] if doc["kind"] == "Pod" else f"{doc['metadata']['name']}-pod-0")
        self.images.update(c["image"] for c in doc["spec"].get("template", doc)["spec"]["containers"])
        self("kube", "play", "--tls-verify=false", *extra, str(path))

    def secret(self, secret_doc: dict) -> None:
        """The Secret's values as podman 4.3 reads a secretKeyRef: a JSON map of base64 values."""
        data = {k: base64.b64encode(v.encode()).decode() for k, v in secret_doc["stringData"].items()}
        path = self.conf.parent / f"{secret_doc['metadata']['name']}.json"
        path.write_text(json.dumps(data))
        self("secret", "create", secret_doc["metadata"]["name"], str(path))


def lower_ulimits(folder: Path) -> Path:
    soft_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    conf = folder / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={soft_files}:{soft_files}", "nproc=4096:4096"]\n')
    return conf


@dataclass
class Exported:
    folder: Path
    realtime: str
    batch: str
    podman: Podman


@pytest.fixture(scope="module")
def exported(docker_client, base_image, shared_dir) -> Iterator[Exported]:
    registry_or_skip(REGISTRY)
    podman = Podman(podman_or_skip(), lower_ulimits(Path(tempfile.mkdtemp(prefix="cxd-podman-"))))
    suffix = uuid.uuid4().hex[:6]  # pods, containers and secrets are host-wide: one name per run
    realtime, batch = f"pe{suffix}", f"pb{suffix}"
    project = shared_dir / f"podman-{suffix}"
    project.mkdir()
    (project / "cortex.yaml").write_text(
        f"- name: {realtime}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: realtime.py\n"
        f"- name: {batch}\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: batch.py\n")
    (project / "realtime.py").write_text(REALTIME)
    (project / "batch.py").write_text(BATCH)
    (project / ".env").write_text("TOKEN=from-the-secret\n")
    for p in project.iterdir():
        p.chmod(0o644)
    (project.parent / "job.json").write_text(json.dumps({"workers": 2, "item_list": {"items": list(range(5)),
                                                                                      "batch_size": 2}}))
    cli = CLI(Path(tempfile.mkdtemp(prefix="cxd-")))
    registry = f"{REGISTRY}/cortexd-tests"
    built = cli("build", str(project), "--registry", registry, "--push", "--base-image", base_image, timeout=600)
    assert built.code == 0, built.out[-3000:] + built.err
    out = project.parent / f"podman-{suffix}-k8s"
    cli("export", "kubernetes", str(project), "--registry", registry, "--job", str(project.parent / "job.json"),
        "-o", str(out), check=True)
    yield Exported(out, realtime, batch, podman)
    if podman.played:
        podman("pod", "rm", "-f", "--ignore", *podman.played, check=False)
    if podman.images:
        podman("rmi", "-f", *podman.images, check=False)
    for name in (realtime, batch):
        podman("secret", "rm", f"{name}-dotenv", check=False)
    shutil.rmtree(podman.conf.parent, ignore_errors=True)
    shutil.rmtree(cli.home, ignore_errors=True)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def secret_of(exported: Exported, api: str) -> dict:
    (secret,) = docs(exported.folder / f"{api}.secret.yaml")
    return secret


def test_podman_plays_the_deployment_and_its_pod_answers_a_prediction(exported):
    podman = exported.podman
    deployment = next(d for d in docs(exported.folder / f"{exported.realtime}.yaml") if d["kind"] == "Deployment")
    podman.secret(secret_of(exported, exported.realtime))
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    c["ports"][0].update(hostIP="127.0.0.1", hostPort=port)
    podman.play(deployment, podman.conf.parent)
    container = f"{exported.realtime}-pod-0-{c['name']}"
    probe = c["readinessProbe"]["httpGet"]
    wait_ready(f"http://127.0.0.1:{port}{probe['path']}", 120)  # the probe as written, from this host
    health = json.loads(podman("inspect", container, "--format", "{{json .Config.Healthcheck}}").stdout)
    assert f"http://localhost:{c['livenessProbe']['httpGet']['port']}/healthz" in health["Test"]
    assert health["Interval"] == c["livenessProbe"]["periodSeconds"] * 10**9
    code, _, body = post_json(f"http://127.0.0.1:{port}/", {"x": 1})
    assert code == 200, body
    assert json.loads(body) == {"uid": 10001, "gid": 10001, "root_writable": False, "token": "from-the-secret",
                                "got": {"x": 1}}
    user, read_only = podman("inspect", container, "--format",
                             "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}").stdout.split()
    sc = c["securityContext"]
    assert (user, read_only) == (f"{sc['runAsUser']}:{sc['runAsGroup']}", "true")


def test_podman_runs_each_index_of_the_batch_job_and_every_item_is_predicted_once(exported):
    podman = exported.podman
    config_map, job = docs(exported.folder / f"{exported.batch}.yaml")
    (complete,) = docs(exported.folder / "on-job-complete" / f"{exported.batch}.yaml")
    podman.secret(secret_of(exported, exported.batch))
    cm_file = podman.conf.parent / "configmap.yaml"
    cm_file.write_text(yaml.safe_dump(config_map))
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 2, 2)
    printed = []
    for index in range(job["spec"]["completions"]):
        name = f"{job['metadata']['name']}-{index}"
        podman.play(index_pod(job, name, index), podman.conf.parent, "--configmap", str(cm_file))
        container = f"{name}-{job['spec']['template']['spec']['containers'][0]['name']}"
        assert podman("wait", container, timeout=120).stdout.strip() == "0", podman("logs", container).stderr
        printed += podman("logs", container).stdout.splitlines()
    batches = [json.loads(ln.removeprefix("BATCH ")) for ln in printed if ln.startswith("BATCH ")]
    assert sorted(i for b in batches for i in b["items"]) == [0, 1, 2, 3, 4]
    assert sorted((b["index"], b["items"]) for b in batches) == [("0", [0, 1]), ("0", [4]), ("1", [2, 3])]
    assert {(b["uid"], b["token"]) for b in batches} == {(10001, "from-the-secret")}
    name = complete["metadata"]["name"]
    podman.play(index_pod(complete, name, 0), podman.conf.parent, "--configmap", str(cm_file))
    container = f"{name}-{complete['spec']['template']['spec']['containers'][0]['name']}"
    assert podman("wait", container, timeout=120).stdout.strip() == "0"
    job_id = json.loads(config_map["data"]["job_spec.json"])["job_id"]
    assert f"COMPLETE {job_id}" in podman("logs", container).stdout


def index_pod(job: dict, name: str, index: int) -> dict:
    """The pod the Job controller makes for one index of an Indexed Job (podman plays no Job)."""
    template = job["spec"]["template"]
    (c,) = template["spec"]["containers"]
    env = [*c.get("env", []), {"name": "JOB_COMPLETION_INDEX", "value": str(index)}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"],
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": {**template["spec"], "containers": [{**c, "env": env}]}}
