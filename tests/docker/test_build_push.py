"""`cortexd build --push` to a real registry, the image pulled back and run as its Deployment says.

The registry is Debian's docker-registry on 127.0.0.1:5000 (.ci/provision-registry.sh,
started by .ci/run). The container is run as a kubelet would run the exported
Deployment: its env, its port, its user, a read-only root filesystem with an
emptyDir /tmp (a tmpfs here), all capabilities dropped, no privilege escalation,
no init process. It must serve a prediction, count it at /metrics, and on
SIGTERM finish the request it holds before exiting 0. A registry that asks for
credentials refuses a push without them (exit 1 with its answer) and takes one with the
credentials of the Docker config.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.real_daemon import free_port, http, post_json

REGISTRY = os.environ.get("CORTEXD_TEST_REGISTRY", "127.0.0.1:5000")

PREDICTOR = '''\
import json
import os
import time


class PythonPredictor:
    def __init__(self, config):
        with open(config["labels"]) as f:
            self.labels = json.load(f)
        with open(os.path.join(config["weights"], "w.txt")) as f:
            self.weights = f.read().strip()

    def predict(self, payload):
        time.sleep(payload.get("sleep", 0))
        try:
            open("written.txt", "w").close()
            root_writable = True
        except OSError:
            root_writable = False
        with open("/tmp/scratch", "w") as f:  # the pod's /tmp is writable
            f.write("x")
        return {
            "label": self.labels[payload.get("i", 0)],
            "weights": self.weights,
            "uid": os.getuid(),
            "greeting": os.environ.get("GREETING"),
            "from_dotenv": os.environ.get("FROM_DOTENV"),
            "files": sorted(os.listdir(".")),
            "root_writable": root_writable,
        }
'''

CONFIG = """\
- name: labeller
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config:
      labels: labels.json
      weights: weights/
    env:
      GREETING: hello
    processes_per_replica: 2  # /metrics sums both workers; SIGTERM drains through the supervisor
    threads_per_process: 2
"""


def registry_or_skip(address: str) -> None:
    try:
        urllib.request.urlopen(f"http://{address}/v2/", timeout=3).close()
        return
    except (urllib.error.URLError, OSError) as e:
        reason = f"no registry answers at http://{address}/v2/ ({e})"
    if os.environ.get("CORTEXD_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason}; provision it with .ci/provision-registry.sh", pytrace=False)
    pytest.skip(f"{reason}; .ci/provision-registry.sh starts one")


def make_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "cortex.yaml").write_text(CONFIG)
    (root / "predictor.py").write_text(PREDICTOR)
    (root / "labels.json").write_text(json.dumps(["setosa", "versicolor"]))
    (root / "weights").mkdir()
    (root / "weights" / "w.txt").write_text("w-1\n" + "0" * 5000)
    (root / ".env").write_text("FROM_DOTENV=yes\n")
    (root / ".cortexignore").write_text("notes/\n*.secret\n")
    (root / "notes").mkdir()
    (root / "notes" / "todo.md").write_text("not in the image")
    (root / "api.secret").write_text("not in the image")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "predictor.cpython-311.pyc").write_bytes(b"stale")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root


def env_of(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """The container's env as the kubelet makes it: values, and secretKeyRef read from the Secret."""
    out = {}
    for e in container.get("env", []):
        if "value" in e:
            out[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    return out


def run_like_the_deployment(docker_client, deployment: dict, port: int, secrets: dict[str, dict]):
    """docker run with exactly what the Deployment's pod spec asks of the kubelet."""
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmpfs = {m["mountPath"]: "" for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    (container_port,) = [p["containerPort"] for p in c["ports"]]
    assert sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]}
    return docker_client.containers.run(
        c["image"],
        environment=env_of(c, secrets),
        user=f"{sc['runAsUser']}:{sc['runAsGroup']}",
        read_only=sc["readOnlyRootFilesystem"],
        tmpfs=tmpfs,
        cap_drop=sc["capabilities"]["drop"],
        security_opt=[] if sc["allowPrivilegeEscalation"] else ["no-new-privileges"],
        ports={f"{container_port}/tcp": ("127.0.0.1", port)},
        detach=True,
        labels={"cortexd.test": "build-push"},
    )


def wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            status, _, body = http("GET", url, timeout=2)
            if status == 200:
                return
            last = (status, body)
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {seconds}s: {last}")


def in_flight(port: int) -> int:
    _, _, body = http("GET", f"http://127.0.0.1:{port}/metrics", timeout=5)
    (line,) = [ln for ln in body.decode().splitlines() if ln.startswith("cortexd_in_flight_requests ")]
    return int(float(line.split()[1]))


def test_build_push_pull_and_run_as_the_deployment_says(cli, docker_client, base_image, shared_dir):
    registry_or_skip(REGISTRY)
    import docker.errors

    project = make_project(shared_dir / "build-push")
    registry = f"{REGISTRY}/cortexd-tests"
    built = cli("build", str(project), "--registry", registry, "--push", "--base-image", base_image,
                timeout=600)
    assert built.code == 0, built.out[-3000:] + built.err
    assert "weights" not in built.err
    assert "file(s)" in built.out
    assert any(s in built.out for s in (": Pushed", ": Layer already exists")), built.out[-2000:]
    out = shared_dir / "build-push-k8s"
    exported = cli("export", "kubernetes", str(project), "--registry", registry, "-o", str(out), check=True)
    assert "FROM_DOTENV" in exported.out  # the report says .env is a Secret, in its own file
    deployment = next(d for d in yaml.safe_load_all((out / "labeller.yaml").read_text())
                      if d["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in env["FROM_DOTENV"]  # read from the Secret, not written in the Deployment
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((out / "labeller.secret.yaml").read_text())
               if d and d["kind"] == "Secret"}
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert f"pushed {image}" in built.out

    # the image comes back from the registry, not from the local cache
    docker_client.images.remove(image, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image)
    repository, _, tag = image.rpartition(":")
    docker_client.images.pull(repository, tag=tag)

    port = free_port()
    container = run_like_the_deployment(docker_client, deployment, port, secrets)
    try:
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        wait_ready(f"http://127.0.0.1:{port}{probe['path']}", 60)
        status, _, body = post_json(f"http://127.0.0.1:{port}/labeller", {"i": 1})
        assert status == 200, body
        answer = json.loads(body)
        assert answer["label"] == "versicolor" and answer["weights"].startswith("w-1")
        assert answer["uid"] == 10001 and answer["root_writable"] is False
        assert (answer["greeting"], answer["from_dotenv"]) == ("hello", "yes")
        # Cortex's rules: no dot files, bytecode, cortex.yaml or .cortexignore'd paths in the image
        assert answer["files"] == ["labels.json", "predictor.py", "weights"]
        assert in_flight(port) == 0

        # SIGTERM while a request is in flight: it is answered, then the container exits 0
        result: dict = {}

        def slow() -> None:
            result["answer"] = post_json(f"http://127.0.0.1:{port}/labeller", {"sleep": 3}, timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 10
        while in_flight(port) < 1:
            assert time.monotonic() < deadline, "the slow request never showed in /metrics"
            time.sleep(0.05)
        # whichever worker answers the scrape (SO_REUSEPORT spreads connections), it counts both
        assert [in_flight(port) for _ in range(8)] == [1] * 8
        container.kill(signal="SIGTERM")
        t.join(timeout=30)
        assert result["answer"][0] == 200, result
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        code = container.wait(timeout=grace)["StatusCode"]
        assert code == 0, container.logs().decode()[-2000:]
        assert b"finishing in-flight requests" in container.logs()
    finally:
        container.remove(force=True)
        try:
            docker_client.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass


USER, PASSWORD = "tester", "s3cret-for-tests"


@pytest.fixture
def auth_registry():
    """A second docker-registry that wants credentials (htpasswd: one user), on a free port."""
    binary = shutil.which("docker-registry")
    if binary is None:
        registry_or_skip(REGISTRY)  # the same requirement: fails under CORTEXD_REQUIRE_DOCKER, else skips
        pytest.skip("docker-registry is not installed")
    import bcrypt

    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="cortexd-auth-registry-"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (root / "htpasswd").write_text(f"{USER}:{hashed}\n")
    (root / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "cortexd-tests", "path": str(root / "htpasswd")}},
    }))
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the auth registry did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def remove_images(docker_client, repository: str) -> None:
    for img in docker_client.images.list(name=repository):
        docker_client.images.remove(img.id, force=True)


def test_push_without_credentials_is_refused_and_with_the_docker_config_succeeds(
        cli, docker_client, base_image, shared_dir, auth_registry, tmp_path):
    project = make_project(shared_dir / "auth-push")
    try:
        # no credentials: the registry refuses; exit 1 with its answer
        cli.env["DOCKER_CONFIG"] = str(tmp_path / "empty-docker-config")
        r = cli("build", str(project), "--registry", auth_registry, "--push", "--base-image", base_image,
                timeout=600)
        assert r.code == 1, r.out[-2000:] + r.err
        assert f"the registry {auth_registry} answered:" in r.err
        assert any(s in r.err.lower() for s in ("unauthorized", "auth")), r.err
        assert "Traceback" not in r.err

        # credentials in the Docker config, where `docker login` writes them: the push goes through
        config = tmp_path / "docker-config"
        config.mkdir()
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {auth_registry: {"auth": token}}}))
        cli.env["DOCKER_CONFIG"] = str(config)
        r = cli("build", str(project), "--registry", auth_registry, "--push", "--base-image", base_image,
                timeout=600)
        assert r.code == 0, r.out[-2000:] + r.err
        (pushed,) = [ln.split()[1] for ln in r.out.splitlines() if ln.startswith("pushed ")]
        tag = pushed.rpartition(":")[2]
        with urllib.request.urlopen(urllib.request.Request(
                f"http://{auth_registry}/v2/labeller/tags/list",
                headers={"Authorization": f"Basic {token}"}), timeout=10) as resp:
            assert tag in json.loads(resp.read())["tags"]
    finally:
        remove_images(docker_client, f"{auth_registry}/labeller")
