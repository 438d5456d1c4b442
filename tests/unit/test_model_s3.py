"""model_s3: signed or unsigned as Cortex 0.23 decided, the endpoint override, S3's refusals in
words, and Cortex 0.10-0.12's download of a legacy `predictor.model` (fake client; the real one
against a local S3 API server: tests/integration/test_s3_models.py)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from predictor_runtime import model_s3
from predictor_runtime.contract import RuntimeSpec
from predictor_runtime.model_s3 import S3Access, S3Source, configured_endpoint, describe_error, open_s3
from predictor_runtime.model_sources import ModelSourceError
from predictor_runtime.models import ModelStore
from predictor_runtime.predictors import StartupError, load_predictor
from tests.unit.s3_fakes import FakeS3, client_error

pytestmark = pytest.mark.timeout(30)

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                        "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    """An environment where botocore finds no credentials, without asking the network: no AWS_*
    keys, credential files that do not exist, and EC2's metadata service off (a CI machine on EC2
    would otherwise lend its instance role)."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def signature_version(access: S3Access):
    return access.client.meta.config.signature_version


# ---- signed or not ------------------------------------------------------------------------------

def test_without_credentials_the_client_does_not_sign(no_credentials):
    from botocore import UNSIGNED

    access = open_s3()
    assert not access.signed and signature_version(access) is UNSIGNED


def test_with_keys_the_client_signs(no_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    access = open_s3()
    assert access.signed and access.credentials == "env"
    assert signature_version(access) is not None and str(signature_version(access)) != "UNSIGNED"


def test_with_a_credentials_file_the_client_signs(no_credentials, monkeypatch, tmp_path):
    # cortexd's replicas have a HOME of their own; a file named in .env is still found
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    assert open_s3().signed


def test_half_a_key_pair_is_refused_in_words(no_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    with pytest.raises(ModelSourceError) as info:
        open_s3()
    message = str(info.value)
    assert "the AWS credentials in this API's environment cannot be used" in message
    assert "AWS_SECRET_ACCESS_KEY" in message and ".env" in message


# ---- endpoint -----------------------------------------------------------------------------------

@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, "http://127.0.0.1:9000"),
    ({"AWS_ENDPOINT_URL": "http://all", "AWS_ENDPOINT_URL_S3": "http://s3-only"}, "http://s3-only"),
    ({"AWS_ENDPOINT_URL": "http://all", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, None),
])
def test_endpoint_comes_from_botocores_variables(environ, expected):
    assert configured_endpoint(environ) == expected


def test_the_client_uses_the_configured_endpoint(no_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    access = open_s3()
    assert access.endpoint == "http://127.0.0.1:9000"
    assert access.client.meta.endpoint_url == "http://127.0.0.1:9000"


# ---- S3's refusals in words ---------------------------------------------------------------------

UNSIGNED_ACCESS = S3Access(client=None, signed=False)
SIGNED_ACCESS = S3Access(client=None, signed=True, credentials="env")


def test_a_bucket_refusing_anonymous_access_says_no_credentials_were_found_and_how_to_give_them():
    message = describe_error(client_error("AccessDenied", "Access Denied", 403), UNSIGNED_ACCESS,
                             "s3://private/model: listing it", "private")
    assert message.startswith("s3://private/model: listing it: no AWS credentials were found, so it was "
                              "read without signing")
    assert "bucket 'private' refused anonymous access (403 Access Denied)" in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert "project's .env or in predictor.env" in message and "~/.aws" in message


def test_a_head_refusal_without_a_body_reads_the_same():
    # download_file's HEAD: S3 answers 403 without a body, botocore's code is "403"
    message = describe_error(client_error("403", "Forbidden", 403, "HeadObject"), UNSIGNED_ACCESS,
                             "s3://private/model/1/m.onnx: downloading it", "private")
    assert "refused anonymous access (403 Forbidden)" in message


def test_access_denied_with_keys_names_where_the_keys_came_from():
    message = describe_error(client_error("AccessDenied", "Access Denied", 403), SIGNED_ACCESS,
                             "s3://private/model: listing it", "private")
    assert "access denied (403 Access Denied) with the AWS credentials found (env)" in message
    assert "s3:ListBucket" in message and "without signing" not in message


@pytest.mark.parametrize("error, expected", [
    (client_error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist", 403),
     "S3 refused the AWS credentials found (env): InvalidAccessKeyId"),
    (client_error("NoSuchBucket", "The specified bucket does not exist", 404), "bucket 'b' does not exist"),
    (client_error("404", "Not Found", 404, "HeadObject"), "not found (404)"),
    (client_error("SlowDown", "Please reduce your request rate", 503), "S3 answered SlowDown: Please reduce"),
])
def test_other_answers_of_s3_in_words(error, expected):
    assert expected in describe_error(error, SIGNED_ACCESS, "s3://b/m", "b")


def test_an_unreachable_endpoint_is_named():
    from botocore.exceptions import EndpointConnectionError

    access = S3Access(client=None, signed=False, endpoint="http://127.0.0.1:9")
    message = describe_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b"), access, "s3://b/m", "b")
    assert message.startswith("s3://b/m: cannot reach S3 at http://127.0.0.1:9: ")


def test_a_refused_listing_stops_start_up_with_the_message(tmp_path):
    # real S3 refuses an anonymous ListObjectsV2 on a private bucket (the local server lets it
    # through and refuses the download: tests/integration/test_s3_models.py)
    store = ModelStore("python", {"m": ("s3://private/model", None)}, loader=lambda p, e, v: p,
                       poll_interval=60, disk_root=str(tmp_path))
    store._fixed["m"][0]._access = S3Access(FakeS3({}, refuse=client_error("AccessDenied", "Access Denied", 403)),
                                            signed=False)
    with pytest.raises(ModelSourceError) as info:
        store.start()
    assert str(info.value).startswith("s3://private/model: listing it: no AWS credentials were found")


# ---- Cortex 0.10-0.12's download of predictor.model ----------------------------------------------

OBJECTS = {"models/iris/model.pkl": b"pkl", "models/iris/labels/names.txt": b"names", "models/one.onnx": b"onnx",
           "models/iris-v2/model.pkl": b"other"}


def test_a_prefix_becomes_a_folder_named_as_its_last_segment(tmp_path):
    source = S3Source("s3://bucket/models/iris", S3Access(FakeS3(OBJECTS)))
    path = Path(source.fetch(str(tmp_path)))
    assert path == tmp_path / "iris"
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == [
        "labels/names.txt", "model.pkl"]  # not iris-v2: a prefix is a folder


def test_a_single_object_becomes_a_file_of_its_name(tmp_path):
    source = S3Source("s3://bucket/models/one.onnx", S3Access(FakeS3(OBJECTS)))
    path = Path(source.fetch(str(tmp_path)))
    assert path == tmp_path / "one.onnx" and path.read_bytes() == b"onnx"


def test_nothing_at_the_location_is_said(tmp_path):
    with pytest.raises(ModelSourceError, match="nothing there"):
        S3Source("s3://bucket/models/absent", S3Access(FakeS3(OBJECTS))).fetch(str(tmp_path))


LEGACY = """
seen = {}

def init(model_path, metadata):
    seen["model_path"] = model_path

def predict(sample, metadata):
    return seen
"""


def legacy_spec(tmp_path: Path, model: str) -> RuntimeSpec:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(LEGACY))
    return RuntimeSpec.from_json({
        "name": "api", "endpoint": "/api", "project_dir": str(tmp_path),
        "predictor": {"type": "legacy", "path": str(tmp_path / "predictor.py"), "python_path": str(tmp_path),
                      "model_path": model, "models": None, "processes_per_replica": 1,
                      "threads_per_process": 1, "config": {}},
    })


@pytest.fixture
def legacy_s3(monkeypatch, tmp_path):
    """The legacy predictor's S3 client is a FakeS3 (the seam: model_s3.open_s3) and its
    downloads go under tmp_path/cache."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading a predictor edits sys.path and sys.modules
    before = set(sys.modules)
    monkeypatch.setenv("CORTEXD_MODEL_DISK_CACHE", str(tmp_path / "cache"))
    fake = FakeS3(OBJECTS)
    monkeypatch.setattr(model_s3, "open_s3", lambda: S3Access(fake, signed=False))
    yield fake
    for name in set(sys.modules) - before:  # the predictor module only, not what botocore imported
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_legacy_init_gets_the_local_copy_of_an_s3_model(tmp_path, legacy_s3):
    loaded = load_predictor(legacy_spec(tmp_path, "s3://bucket/models/iris"))
    local = tmp_path / "cache" / "iris"
    assert loaded.predict(None, None, None) == {"model_path": str(local)}
    assert (local / "model.pkl").read_bytes() == b"pkl"
    assert loaded.metadata == {"model_path": "s3://bucket/models/iris"}  # GET shows what the user wrote


def test_legacy_s3_model_that_cannot_be_read_stops_start_up_in_words(tmp_path, legacy_s3):
    legacy_s3.refuse = client_error("AccessDenied", "Access Denied", 403)
    with pytest.raises(StartupError) as info:
        load_predictor(legacy_spec(tmp_path, "s3://bucket/models/iris"))
    assert str(info.value).startswith("predictor.py: predictor.model s3://bucket/models/iris: listing it: "
                                      "no AWS credentials were found")
