"""s3:// models from a local S3 API server (tests/s3_server.py): read without signing when no AWS
credentials are found, as Cortex 0.23 did; signed with keys; a private bucket without keys says
so; legacy `kind: api` models downloaded before init(model_path). Real runtimes and a real
daemon, HTTP on 127.0.0.1 only."""

from __future__ import annotations

import json

import pytest

from tests.builders import write_project
from tests.real_daemon import free_port, post_json
from tests.s3_server import PRIVATE, PUBLIC

pytestmark = pytest.mark.timeout(120)

# a python predictor whose "model" is the text of weights.txt in the model's folder
READS_WEIGHTS = """
import os

class PythonPredictor:
    def __init__(self, python_client, config):
        self.client = python_client

    def load_model(self, model_path):
        with open(os.path.join(model_path, "weights.txt")) as f:
            return f.read()

    def predict(self, payload):
        return {"model": self.client.get_model(payload.get("name"))}
"""

# a legacy module predictor that reports the model_path init() got and what is there
LEGACY_READS_PATH = """
import os

seen = {}

def init(model_path, metadata):
    seen["path"] = model_path
    if os.path.isdir(model_path):
        seen["files"] = sorted(os.listdir(model_path))
    else:
        with open(model_path) as f:
            seen["text"] = f.read()

def predict(sample, metadata):
    return seen
"""


@pytest.mark.parametrize("bucket, keys, logged", [
    (PUBLIC, False, "no AWS credentials found: reading s3:// models at http://127.0.0.1"),
    (PRIVATE, True, "with the AWS credentials found (env)"),  # signed, as before
], ids=["public-unsigned", "private-signed"])
def test_model_path_is_read_unsigned_without_keys_and_signed_with_them(runtime, local_s3, s3_environment,
                                                                      bucket, keys, logged):
    s3_environment(keys=keys)
    url = local_s3.put_tree(bucket, local_s3.prefix(), {"weights.txt": b"the weights"})
    rt = runtime(READS_WEIGHTS, model_path=url)
    rt.wait_ready(30)
    status, _, body = post_json(f"{rt.url}/test-api", {})
    assert (status, json.loads(body)) == (200, {"model": "the weights"})
    assert logged in rt.stderr()


def test_public_bucket_models_dir_is_read_without_credentials(replica, local_s3, s3_environment):
    s3_environment()
    prefix = local_s3.prefix()
    local_s3.put_tree(PUBLIC, prefix, {"a/weights.txt": b"model a", "b/1/weights.txt": b"model b v1",
                                       "b/2/weights.txt": b"model b v2"})
    r = replica("python", READS_WEIGHTS, models={"dir": f"s3://{PUBLIC}/{prefix}"}).wait_ready()
    assert r.predict({"name": "a"}) == (200, {"model": "model a"})
    assert r.predict({"name": "b"}) == (200, {"model": "model b v2"})
    assert sorted(r.info()["models"]) == ["a", "b"]


def test_private_bucket_without_keys_says_so_plainly(runtime, local_s3, s3_environment):
    s3_environment()
    url = local_s3.put_tree(PRIVATE, local_s3.prefix(), {"weights.txt": b"secret"})
    rt = runtime(READS_WEIGHTS, model_path=url)
    assert rt.wait_exit(30) == 1
    err = rt.stderr()
    assert "no AWS credentials were found, so it was read without signing" in err, err
    assert f"bucket '{PRIVATE}' refused anonymous access (403" in err, err
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in err and ".env" in err, err
    assert "Traceback" not in err and "botocore" not in err, err


@pytest.mark.parametrize("layout", ["prefix", "file"])
def test_legacy_s3_model_is_downloaded_before_init(runtime, local_s3, s3_environment, layout):
    # Cortex 0.10-0.12 downloaded predictor.model, then called init(<local copy>, metadata)
    s3_environment()
    prefix = local_s3.prefix()
    if layout == "prefix":
        url = local_s3.put_tree(PUBLIC, f"{prefix}/iris-model", {"model.pkl": b"m", "labels.txt": b"l"})
    else:
        url = local_s3.put(PUBLIC, f"{prefix}/iris.onnx", b"single file")
    rt = runtime(LEGACY_READS_PATH, kind="legacy", model_path=url)
    rt.wait_ready(30)
    status, _, body = post_json(f"{rt.url}/iris", {})
    seen = json.loads(body)
    assert status == 200, body
    assert seen["path"].startswith("/") and not seen["path"].startswith("s3:")
    if layout == "prefix":
        assert seen["path"].endswith("/iris-model") and seen["files"] == ["labels.txt", "model.pkl"]
    else:
        assert seen["path"].endswith("/iris.onnx") and seen["text"] == "single file"


PROJECT = """\
- name: anonymous
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    models:
      dir: {models_dir}
  networking:
    local_port: {port}

- name: private
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    model_path: {private}
  networking:
    local_port: {port}
"""


def test_daemon_serves_a_public_s3_model_and_explains_a_private_one(cli, local_s3, tmp_path):
    prefix = local_s3.prefix()
    models_dir = local_s3.put_tree(PUBLIC, prefix, {"iris/weights.txt": b"iris weights"})
    private = local_s3.put_tree(PRIVATE, prefix, {"weights.txt": b"secret"})
    port = free_port()
    # the project's .env is where a replica's AWS_* come from (it sees nothing of the daemon's)
    dotenv = "".join(f"{k}={v}\n" for k, v in local_s3.environment(tmp_path).items())
    project = write_project(tmp_path / "s3-project", PROJECT.format(models_dir=models_dir, private=private,
                                                                    port=port),
                            {"predictor.py": READS_WEIGHTS, ".env": dotenv})
    cli("up", "-d", "--backend", "process", str(project), check=True)

    def settled(snap: dict) -> bool:
        apis = {a["name"]: a for a in snap["apis"]}
        return (apis["anonymous"]["status"] == "live"
                and "refused anonymous access" in (apis["private"].get("reason") or ""))

    snap = cli.wait_for(settled, timeout=90, what="anonymous live, private failing with its reason")
    status, _, body = post_json(f"http://127.0.0.1:{port}/anonymous", {"name": "iris"})
    assert (status, json.loads(body)) == (200, {"model": "iris weights"})

    [private_api] = [a for a in snap["apis"] if a["name"] == "private"]
    reason = private_api["reason"]
    assert private_api["status"] in ("updating", "error") and private_api["failure"] == "crashed", private_api
    assert f"bucket '{PRIVATE}' refused anonymous access (403" in reason, reason
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in reason, reason
    assert "Traceback" not in reason and "Unable to locate credentials" not in reason, reason
