"""Every example's manifests validate strictly against the targeted Kubernetes minor's own schemas.

kubernetes-validate (PyPI) ships each Kubernetes release's OpenAPI schemas and
checks offline; --strict refuses any property the schema does not define. A
Knative Service is a custom resource, so its template.spec is checked as the
PodSpec it extends (less the two Revision fields, containerConcurrency and
timeoutSeconds, which Knative adds beside the PodSpec fields).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cortexd.kube.export import export_kubernetes
from cortexd.kube.manifests import TARGET_KUBERNETES, ExportOptions
from cortexd.spec import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VERSION = f"{TARGET_KUBERNETES}.0"
KNATIVE_REVISION_FIELDS = ("containerConcurrency", "timeoutSeconds")


def example_copy(name: str, tmp_path: Path) -> Path:
    """The example, with stand-ins for the models its make_model*.py would write (never loaded here)."""
    dst = tmp_path / name
    shutil.copytree(EXAMPLES / name, dst)
    if name == "onnx-iris":
        (dst / "model").mkdir()
        (dst / "model" / "iris.onnx").write_bytes(b"stand-in")
    elif name == "onnx-multi-model":
        for m in ("tree", "forest", "linear"):
            (dst / "models" / m).mkdir(parents=True)
            (dst / "models" / m / f"{m}.onnx").write_bytes(b"stand-in")
    elif name == "tensorflow-iris":
        (dst / "model" / "variables").mkdir(parents=True)
        (dst / "model" / "saved_model.pb").write_bytes(b"stand-in")
    elif name == "legacy-iris":
        shutil.copytree(EXAMPLES / "iris-classifier", tmp_path / "iris-classifier")
    return dst


def strict(doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def exported(project: Path, flavor: str, out: Path) -> list[dict]:
    apis = list(load_config([str(project)]).apis)
    export_kubernetes(apis, "registry.example:5000/team", ExportOptions(flavor=flavor, ingress_class="nginx",
                                                                         namespace="ml"), out)
    docs = []
    for f in sorted(out.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    assert docs
    return docs


EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "cortex.yaml").is_file())


def test_every_example_is_covered():
    assert {"iris-classifier", "legacy-iris", "onnx-iris", "onnx-multi-model", "tensorflow-iris"} <= set(EXAMPLE_NAMES)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_deployment_flavor_validates_strictly(name, tmp_path):
    docs = exported(example_copy(name, tmp_path), "deployment", tmp_path / "k8s")
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"}
    for doc in docs:
        strict(doc)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_knative_template_spec_validates_as_a_pod_spec(name, tmp_path):
    docs = exported(example_copy(name, tmp_path), "knative", tmp_path / "k8s")
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("serving.knative.dev/v1", "Service")
        spec = dict(doc["spec"]["template"]["spec"])
        for field in KNATIVE_REVISION_FIELDS:
            spec.pop(field)
        strict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": doc["metadata"]["name"]}, "spec": spec})


def test_strict_validation_does_refuse_an_unknown_field():
    """The check above can fail: a misspelt field is refused."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "a", "image": "i", "readinessprobe": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        strict(pod)


def test_gpu_memory_and_update_strategy_validate(tmp_path):
    project = example_copy("iris-classifier", tmp_path)
    text = (project / "cortex.yaml").read_text().replace(
        "    cpu: 200m", "    cpu: 1500m\n    gpu: 2\n    mem: 3Gi\n  update_strategy:\n    max_surge: 2\n"
                        "    max_unavailable: 0\n  autoscaling:\n    target_replica_concurrency: 2.5\n"
                        "    max_replica_concurrency: 40\n  networking:\n    endpoint: a/b")
    (project / "cortex.yaml").write_text(text)
    (project / ".env").write_text("TOKEN=abc\n")
    for flavor in ("deployment", "knative"):
        for doc in exported(project, flavor, tmp_path / f"k8s-{flavor}"):
            if doc["kind"] == "Service" and flavor == "knative":
                spec = {k: v for k, v in doc["spec"]["template"]["spec"].items()
                        if k not in KNATIVE_REVISION_FIELDS}
                doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec}
            strict(doc)


def test_the_projects_dotenv_is_a_secret_the_container_reads_not_plain_values_in_the_manifest(tmp_path):
    project = example_copy("iris-classifier", tmp_path)
    (project / ".env").write_text("TOKEN=s3cr3t-value\nDB_URL=postgres://u:pw@db/x\n")
    for flavor in ("deployment", "knative"):
        out = tmp_path / f"k8s-{flavor}"
        docs = exported(project, flavor, out)
        api = next(d for d in docs if d["kind"] in ("Deployment", "Service") and "template" in d["spec"])
        name = api["metadata"]["name"]
        secret_file = out / f"{name}.secret.yaml"
        assert "s3cr3t-value" not in (out / f"{name}.yaml").read_text()  # only the Secret's file has it
        (secret,) = [d for d in yaml.safe_load_all(secret_file.read_text()) if d]
        assert secret["metadata"] == {"name": f"{name}-dotenv", "namespace": "ml",
                                      "labels": api["metadata"]["labels"]}
        assert secret["stringData"] == {"TOKEN": "s3cr3t-value", "DB_URL": "postgres://u:pw@db/x"}
        strict(secret)
        env = {e["name"]: e for e in api["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TOKEN"] == {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": f"{name}-dotenv",
                                                                                "key": "TOKEN"}}}
        report = (out / "cortexd-report.txt").read_text()
        assert f"Secret {name}-dotenv" in report and "keep it out of version control" in report
