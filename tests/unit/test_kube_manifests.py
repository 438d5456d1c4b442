"""`cortexd export kubernetes`: every Cortex field -> its manifest path and value, or its report line.

One table per flavor (deployment, knative), legacy `kind: api` included. The
table must name every field of config_schema.json, and report.FIELDS must say
the same kind of thing (manifest / image / report) for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cortexd.kube import layout
from cortexd.kube.manifests import ExportOptions, manifests
from cortexd.kube.report import FIELDS, FIELDS_BY_KEY, notes_for, report_lines
from cortexd.kube.splitter import http_route
from cortexd.spec.load import load_documents
from cortexd.spec.model import SplitterSpec

SCHEMA = Path(__file__).resolve().parents[2] / "config_schema.json"

CONFIG = """\
- name: rt
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    models:
      paths:
        - name: m1
          model_path: m1/
      cache_size: 1
      disk_cache_size: 2
    processes_per_replica: 1
    threads_per_process: 3
    config: {greeting: hello}
    python_path: lib/
    env: {MODE: fast}
  networking: {endpoint: /my/rt, local_port: 9001, api_gateway: public}
  compute: {cpu: 1500m, gpu: 1, mem: 2Gi}
  monitoring: {model_type: classification, key: label}
  autoscaling:
    min_replicas: 2
    max_replicas: 9
    init_replicas: 3
    target_replica_concurrency: 1.5
    max_replica_concurrency: 2000
    window: 30s
    downscale_stabilization_period: 2m
    upscale_stabilization_period: 20s
    max_downscale_factor: 0.5
    max_upscale_factor: 3
    downscale_tolerance: 0.1
    upscale_tolerance: 0.2
  update_strategy: {max_surge: 2, max_unavailable: 0}
- name: tf
  kind: RealtimeAPI
  predictor:
    type: tensorflow
    path: tfpredictor.py
    model_path: s3://bucket/tf-model
    signature_key: serving_sig
    server_side_batching: {max_batch_size: 4, batch_interval: 5ms}
    processes_per_replica: 2
    threads_per_process: 2
    tensorflow_serving_image: example/tfs:1
    image: example/custom-runtime:1
  networking: {api_gateway: none}
- name: tfm
  kind: RealtimeAPI
  predictor:
    type: tensorflow
    path: tfpredictor.py
    models:
      signature_key: models_sig
      paths:
        - name: a
          model_path: tfmodel/
          signature_key: a_sig
- name: ox
  kind: RealtimeAPI
  predictor:
    type: onnx
    path: oxpredictor.py
    models:
      dir: onnxmodels/
- kind: deployment
  name: legacy-group
- kind: api
  name: lg
  endpoint: /legacy/lg
  python_path: lib/
  python:
    predictor: legacy.py
  tracker: {model_type: regression, key: score}
  compute: {min_replicas: 2, max_replicas: 4, init_replicas: 3, target_cpu_utilization: 65, cpu: 2, gpu: 1, mem: 1Gi}
  metadata: {threshold: 3}
- kind: api
  name: lg2
  predictor:
    type: python
    path: legacy.py
    model: m1/
    python_path: lib/
    metadata: {k: v}
- name: split
  kind: TrafficSplitter
  networking: {endpoint: /ab}
  apis:
    - {name: rt, weight: 70}
    - {name: ox, weight: 30}
    - {name: tf, weight: 25, shadow: true}
"""


@pytest.fixture(scope="module")
def apis(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("proj")
    (root / "predictor.py").write_text(
        "class PythonPredictor:\n    def __init__(self, config, python_client):\n        pass\n"
        "    def load_model(self, model_path):\n        return None\n"
        "    def predict(self, payload):\n        return 1\n")
    (root / "tfpredictor.py").write_text(
        "class TensorFlowPredictor:\n    def __init__(self, tensorflow_client, config):\n        pass\n"
        "    def predict(self, payload):\n        return 1\n")
    (root / "oxpredictor.py").write_text(
        "class ONNXPredictor:\n    def __init__(self, onnx_client, config):\n        pass\n"
        "    def predict(self, payload):\n        return 1\n")
    (root / "legacy.py").write_text("def predict(sample, metadata):\n    return 1\n")
    (root / "lib").mkdir()
    (root / "m1").mkdir()
    (root / "m1" / "weights.bin").write_bytes(b"w")
    (root / "tfmodel" / "variables").mkdir(parents=True)
    (root / "tfmodel" / "saved_model.pb").write_bytes(b"pb")
    (root / "onnxmodels" / "a").mkdir(parents=True)
    (root / "onnxmodels" / "a" / "a.onnx").write_bytes(b"onnx")
    loaded = load_documents(CONFIG, str(root / "cortex.yaml"), str(root))
    return {**{a.name: a for a in loaded.apis}, **{s.name: s for s in loaded.splitters}}


IMAGE = "registry.example/x:tag"
DOTENV = {"FROM_DOTENV": "1", "MODE": "slow"}


def objects(spec, flavor: str) -> dict[str, dict]:
    if isinstance(spec, SplitterSpec):
        return {"HTTPRoute": http_route(spec, ExportOptions(flavor=flavor))}
    out = manifests(spec, IMAGE, layout.container_env(spec, DOTENV), ExportOptions(flavor=flavor))
    return {o["kind"]: o for o in out}


def get(obj: Any, *path: Any) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def report(spec, flavor: str) -> str:
    notes = notes_for(spec, flavor, sorted(DOTENV), IMAGE, [])
    return "\n".join(report_lines(spec, flavor, f"{spec.name}.yaml", [], notes))


POD = ("spec", "template", "spec")
RULE0 = ("spec", "rules", 0)
C0 = POD + ("containers", 0)
KN_POD = ("spec", "template", "spec")
RULE0 = ("spec", "rules", 0)
KN_C0 = KN_POD + ("containers", 0)
KN_ANN = ("spec", "template", "metadata", "annotations")
ANN = "autoscaling.knative.dev/"


def image_spec(spec) -> dict:
    """The runtime spec as the image holds it (its JSON)."""
    return json.loads(layout.image_runtime_spec(spec).dumps())


# (field, api, deployment check, knative check); a check is one of
#   ("manifest", kind, path, expected)           value in the manifests
#   ("absent", kind)                             no object of that kind is written
#   ("image", fn(spec) -> value, expected)       baked into the image
#   ("report", text)                             the API's report line for the field holds text
#   ("section",)                                 a section: its fields are rows of their own
def same(check):
    return check, check


ROWS: list[tuple[str, str, tuple, tuple]] = [
    ("entry.kind", "lg", *same(("image", lambda s: s.kind, "api"))),
    ("realtime_api.name", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "scaleTargetRef", "name"), "rt"),
     ("manifest", "Service", ("metadata", "name"), "rt")),
    ("realtime_api.kind", "rt", *same(("image", lambda s: s.kind, "RealtimeAPI"))),
    ("realtime_api.predictor", "rt", *same(("section",))),
    ("realtime_api.networking", "rt", *same(("section",))),
    ("realtime_api.compute", "rt", *same(("section",))),
    ("realtime_api.monitoring", "rt", *same(("section",))),
    ("realtime_api.autoscaling", "rt", *same(("section",))),
    ("realtime_api.update_strategy", "rt", *same(("section",))),
    ("predictor.type", "ox", *same(("image", lambda s: image_spec(s)["predictor"]["type"], "onnx"))),
    ("predictor.path", "rt", *same(("image", lambda s: image_spec(s)["predictor"]["path"],
                                    "/opt/cortexd/project/predictor.py"))),
    ("predictor.model_path", "tf", *same(("image", lambda s: image_spec(s)["predictor"]["model_path"],
                                          "s3://bucket/tf-model"))),
    ("predictor.models", "rt", *same(("section",))),
    ("predictor.processes_per_replica", "tf",
     *same(("image", lambda s: image_spec(s)["predictor"]["processes_per_replica"], 2))),
    ("predictor.threads_per_process", "rt",
     *same(("image", lambda s: image_spec(s)["predictor"]["threads_per_process"], 3))),
    ("predictor.config", "rt", *same(("image", lambda s: image_spec(s)["predictor"]["config"],
                                      {"greeting": "hello"}))),
    ("predictor.python_path", "rt", *same(("image", lambda s: layout.image_env(s)["PYTHONPATH"],
                                           "/opt/cortexd/project/lib:/opt/cortexd/project"))),
    ("predictor.image", "tf", *same(("image", lambda s: s.predictor.image, "example/custom-runtime:1"))),
    ("predictor.env", "rt",
     ("manifest", "Deployment", C0 + ("env",),
      [{"name": "MODE", "value": "slow"}, {"name": "FROM_DOTENV", "value": "1"}]),
     ("manifest", "Service", KN_C0 + ("env",),
      [{"name": "MODE", "value": "slow"}, {"name": "FROM_DOTENV", "value": "1"}])),
    ("predictor.signature_key", "tf",
     *same(("image", lambda s: image_spec(s)["predictor"]["signature_key"], "serving_sig"))),
    ("predictor.server_side_batching", "tf", *same(("section",))),
    ("predictor.tensorflow_serving_image", "tf", *same(("report", "no TensorFlow Serving container"))),
    ("models.dir", "ox", *same(("image", lambda s: image_spec(s)["predictor"]["models"]["dir"],
                                "/opt/cortexd/project/onnxmodels"))),
    ("models.paths", "rt", *same(("image", lambda s: image_spec(s)["predictor"]["models"]["paths"][0]["path"],
                                  "/opt/cortexd/project/m1"))),
    ("models.cache_size", "rt", *same(("image", lambda s: image_spec(s)["predictor"]["models"]["cache_size"], 1))),
    ("models.disk_cache_size", "rt",
     *same(("image", lambda s: image_spec(s)["predictor"]["models"]["disk_cache_size"], 2))),
    ("models.signature_key", "tfm",
     *same(("image", lambda s: image_spec(s)["predictor"]["models"]["signature_key"], "models_sig"))),
    ("model.name", "rt", *same(("image", lambda s: image_spec(s)["predictor"]["models"]["paths"][0]["name"], "m1"))),
    ("model.model_path", "tfm", *same(("image", lambda s: image_spec(s)["predictor"]["models"]["paths"][0]["path"],
                                       "/opt/cortexd/project/tfmodel"))),
    ("model.signature_key", "tfm",
     *same(("image", lambda s: image_spec(s)["predictor"]["models"]["paths"][0]["signature_key"], "a_sig"))),
    ("server_side_batching.max_batch_size", "tf",
     *same(("image", lambda s: image_spec(s)["predictor"]["server_side_batching"]["max_batch_size"], 4))),
    ("server_side_batching.batch_interval", "tf",
     *same(("image", lambda s: image_spec(s)["predictor"]["server_side_batching"]["batch_interval"], 0.005))),
    ("networking.endpoint", "rt",
     ("manifest", "Ingress", ("spec", "rules", 0, "http", "paths", 0, "path"), "/my/rt"),
     ("report", "routes by host name")),
    ("networking.local_port", "rt", ("report", "replaced by the Service"), ("report", "replaced by the Knative")),
    ("networking.api_gateway", "tf", ("absent", "Ingress"),
     ("manifest", "Service", ("metadata", "labels", "networking.knative.dev/visibility"), "cluster-local")),
    ("compute.cpu", "rt", ("manifest", "Deployment", C0 + ("resources", "requests", "cpu"), "1500m"),
     ("manifest", "Service", KN_C0 + ("resources", "requests", "cpu"), "1500m")),
    ("compute.gpu", "rt", ("manifest", "Deployment", C0 + ("resources", "limits", "nvidia.com/gpu"), "1"),
     ("manifest", "Service", KN_C0 + ("resources", "limits", "nvidia.com/gpu"), "1")),
    ("compute.inf", "rt", *same(("fields", "aws.amazon.com/neuron"))),
    ("compute.mem", "rt",
     ("manifest", "Deployment", C0 + ("resources",),
      {"requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"}}),
     ("manifest", "Service", KN_C0 + ("resources", "limits", "memory"), "2Gi")),
    ("monitoring.model_type", "rt", *same(("report", "CloudWatch"))),
    ("monitoring.key", "rt", *same(("report", "post_predict"))),
    ("autoscaling.min_replicas", "rt", ("manifest", "HorizontalPodAutoscaler", ("spec", "minReplicas"), 2),
     ("manifest", "Service", KN_ANN + (ANN + "min-scale",), "2")),
    ("autoscaling.max_replicas", "rt", ("manifest", "HorizontalPodAutoscaler", ("spec", "maxReplicas"), 9),
     ("manifest", "Service", KN_ANN + (ANN + "max-scale",), "9")),
    ("autoscaling.init_replicas", "rt", ("manifest", "Deployment", ("spec", "replicas"), 3),
     ("manifest", "Service", KN_ANN + (ANN + "initial-scale",), "3")),
    ("autoscaling.target_replica_concurrency", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "metrics", 0),
      {"type": "Pods", "pods": {"metric": {"name": "cortexd_in_flight_requests"},
                                "target": {"type": "AverageValue", "averageValue": "1500m"}}}),
     ("manifest", "Service", KN_ANN + (ANN + "target",), "1.5")),
    ("autoscaling.max_replica_concurrency", "rt", ("report", "no per-pod request limit"),
     # 2000 is above Knative's default container-concurrency-max-limit: capped, and said
     ("manifest", "Service", KN_POD + ("containerConcurrency",), 1000)),
    ("autoscaling.window", "rt", ("report", "avg_over_time(cortexd_in_flight_requests[<window>])"),
     ("manifest", "Service", KN_ANN + (ANN + "window",), "30s")),
    ("autoscaling.downscale_stabilization_period", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "behavior", "scaleDown", "stabilizationWindowSeconds"), 120),
     ("manifest", "Service", KN_ANN + (ANN + "scale-down-delay",), "120s")),
    ("autoscaling.upscale_stabilization_period", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "behavior", "scaleUp", "stabilizationWindowSeconds"), 20),
     ("report", "no scale-up delay")),
    ("autoscaling.max_downscale_factor", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "behavior", "scaleDown", "policies", 0),
      {"type": "Percent", "value": 50, "periodSeconds": 10}),
     ("report", "max-scale-down-rate")),
    ("autoscaling.max_upscale_factor", "rt",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "behavior", "scaleUp", "policies", 0),
      {"type": "Percent", "value": 200, "periodSeconds": 10}),
     ("report", "max-scale-up-rate")),
    ("autoscaling.downscale_tolerance", "rt", ("report", "--horizontal-pod-autoscaler-tolerance"),
     ("report", "no equivalent in Knative")),
    ("autoscaling.upscale_tolerance", "rt", ("report", "--horizontal-pod-autoscaler-tolerance"),
     ("report", "no equivalent in Knative")),
    ("update_strategy.max_surge", "rt",
     ("manifest", "Deployment", ("spec", "strategy", "rollingUpdate", "maxSurge"), 2),
     ("report", "rollout-duration")),
    ("update_strategy.max_unavailable", "rt",
     ("manifest", "Deployment", ("spec", "strategy", "rollingUpdate", "maxUnavailable"), 0),
     ("report", "keeps the old revision serving")),
    # legacy
    ("legacy_api.kind", "lg", *same(("image", lambda s: image_spec(s)["predictor"]["type"], "legacy"))),
    ("legacy_api.name", "lg", ("manifest", "Deployment", ("metadata", "name"), "lg"),
     ("manifest", "Service", ("metadata", "name"), "lg")),
    ("legacy_api.endpoint", "lg",
     ("manifest", "Ingress", ("spec", "rules", 0, "http", "paths", 0, "path"), "/legacy/lg"),
     ("report", "routes by host name")),
    ("legacy_api.python_path", "lg", *same(("image", lambda s: layout.image_env(s)["PYTHONPATH"],
                                            "/opt/cortexd/project/lib:/opt/cortexd/project"))),
    ("legacy_api.python", "lg", *same(("section",))),
    ("legacy_api.python.predictor", "lg", *same(("image", lambda s: image_spec(s)["predictor"]["path"],
                                                 "/opt/cortexd/project/legacy.py"))),
    ("legacy_api.predictor", "lg2", *same(("section",))),
    ("legacy_api.predictor.type", "lg2", *same(("image", lambda s: image_spec(s)["predictor"]["type"], "legacy"))),
    ("legacy_api.predictor.path", "lg2", *same(("image", lambda s: image_spec(s)["predictor"]["path"],
                                                "/opt/cortexd/project/legacy.py"))),
    ("legacy_api.predictor.model", "lg2", *same(("image", lambda s: image_spec(s)["predictor"]["model_path"],
                                                 "/opt/cortexd/project/m1"))),
    ("legacy_api.predictor.python_path", "lg2", *same(("image", lambda s: layout.image_env(s)["PYTHONPATH"],
                                                       "/opt/cortexd/project/lib:/opt/cortexd/project"))),
    ("legacy_api.predictor.metadata", "lg2", *same(("image", lambda s: image_spec(s)["predictor"]["config"],
                                                    {"k": "v"}))),
    ("legacy_api.tracker", "lg", *same(("section",))),
    ("legacy_api.tracker.key", "lg", *same(("report", "CloudWatch"))),
    ("legacy_api.tracker.model_type", "lg", *same(("report", "CloudWatch"))),
    ("legacy_api.compute", "lg", *same(("section",))),
    ("legacy_api.compute.min_replicas", "lg", ("manifest", "HorizontalPodAutoscaler", ("spec", "minReplicas"), 2),
     ("manifest", "Service", KN_ANN + (ANN + "min-scale",), "2")),
    ("legacy_api.compute.max_replicas", "lg", ("manifest", "HorizontalPodAutoscaler", ("spec", "maxReplicas"), 4),
     ("manifest", "Service", KN_ANN + (ANN + "max-scale",), "4")),
    ("legacy_api.compute.init_replicas", "lg", ("manifest", "Deployment", ("spec", "replicas"), 3),
     ("manifest", "Service", KN_ANN + (ANN + "initial-scale",), "3")),
    ("legacy_api.compute.target_cpu_utilization", "lg",
     ("manifest", "HorizontalPodAutoscaler", ("spec", "metrics", 0),
      {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                   "averageUtilization": 65}}}),
     ("manifest", "Service", KN_ANN,
      {ANN + "class": "hpa.autoscaling.knative.dev", ANN + "metric": "cpu", ANN + "target": "65",
       ANN + "min-scale": "2", ANN + "max-scale": "4", ANN + "initial-scale": "3",
       "prometheus.io/scrape": "true", "prometheus.io/port": "8888", "prometheus.io/path": "/metrics"})),
    ("legacy_api.compute.cpu", "lg", ("manifest", "Deployment", C0 + ("resources", "requests", "cpu"), "2"),
     ("manifest", "Service", KN_C0 + ("resources", "requests", "cpu"), "2")),
    ("legacy_api.compute.gpu", "lg", ("manifest", "Deployment", C0 + ("resources", "limits", "nvidia.com/gpu"), "1"),
     ("manifest", "Service", KN_C0 + ("resources", "limits", "nvidia.com/gpu"), "1")),
    ("legacy_api.compute.mem", "lg", ("manifest", "Deployment", C0 + ("resources", "limits", "memory"), "1Gi"),
     ("manifest", "Service", KN_C0 + ("resources", "requests", "memory"), "1Gi")),
    ("legacy_api.metadata", "lg", *same(("image", lambda s: image_spec(s)["predictor"]["config"], {"threshold": 3}))),
    ("traffic_splitter.name", "split", *same(("manifest", "HTTPRoute", ("metadata", "name"), "split"))),
    ("traffic_splitter.kind", "split", *same(("manifest", "HTTPRoute", ("apiVersion",),
                                              "gateway.networking.k8s.io/v1"))),
    ("traffic_splitter.networking", "split", *same(("section",))),
    ("traffic_splitter.apis", "split", *same(("manifest", "HTTPRoute", RULE0 + ("backendRefs", 1, "name"), "ox"))),
    ("splitter_target.name", "split", *same(("manifest", "HTTPRoute", RULE0 + ("backendRefs", 0, "name"), "rt"))),
    ("splitter_target.weight", "split", *same(("manifest", "HTTPRoute", RULE0 + ("backendRefs", 0, "weight"), 70))),
    ("splitter_target.shadow", "split", *same(("manifest", "HTTPRoute", RULE0 + ("filters", 0, "requestMirror"),
                                               {"backendRef": {"kind": "Service", "name": "tf", "port": 80},
                                                "percent": 25}))),
    ("legacy_deployment.kind", "lg", *same(("report", "--namespace"))),
    ("batch_api.name", "rt", *same(("fields", "<name>-<job id>"))),
    ("batch_api.kind", "rt", *same(("fields", "Indexed Job"))),
    ("batch_api.predictor", "rt", *same(("fields", "predictor_runtime.batch_worker"))),
    ("batch_api.networking", "rt", *same(("fields", "--job"))),
    ("batch_api.compute", "rt", *same(("fields", "resources"))),
    ("legacy_deployment.name", "lg", *same(("report", "--namespace"))),
]

KIND_OF_CHECK = {"manifest": "manifest", "absent": "manifest", "image": "image", "report": "report",
                 "section": "section", "fields": "report"}


def schema_fields() -> set[str]:
    """`section.field` for every property of config_schema.json's $defs (predictor kinds folded)."""
    defs = json.loads(SCHEMA.read_text())["$defs"]
    fold = {"python_predictor": "predictor", "tensorflow_predictor": "predictor", "onnx_predictor": "predictor",
            "python_models": "models", "tensorflow_models": "models", "onnx_models": "models",
            "python_model": "model", "tensorflow_model": "model", "onnx_model": "model"}
    out: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        for name, sub in (node.get("properties") or {}).items():
            out.add(f"{prefix}.{name}")
            if isinstance(sub, dict) and "properties" in sub:
                walk(sub, f"{prefix}.{name}")

    for name, node in defs.items():
        if isinstance(node, dict):
            walk(node, fold.get(name, name))
    return out


def test_the_table_and_the_report_cover_every_cortex_field():
    fields = schema_fields()
    assert fields, "config_schema.json has no $defs properties?"
    assert {row[0] for row in ROWS} == fields
    assert set(FIELDS_BY_KEY) == fields
    assert len(FIELDS) == len(FIELDS_BY_KEY)  # no key listed twice


@pytest.mark.parametrize("flavor", ["deployment", "knative"])
@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_field_lands_where_the_table_says(apis, row, flavor):
    key, api, deployment_check, knative_check = row
    check = deployment_check if flavor == "deployment" else knative_check
    spec = apis[api]
    assert FIELDS_BY_KEY[key].where(flavor).kind == KIND_OF_CHECK[check[0]], key
    kind = check[0]
    if kind == "manifest":
        _, obj_kind, path, expected = check
        assert get(objects(spec, flavor)[obj_kind], *path) == expected
    elif kind == "absent":
        assert check[1] not in objects(spec, flavor)
    elif kind == "image":
        _, fn, expected = check
        assert fn(spec) == expected
    elif kind == "report":
        lines = [ln for ln in report(spec, flavor).splitlines() if ln.strip().startswith(f"{key}:")]
        assert lines, f"no report line for {key} in:\n{report(spec, flavor)}"
        assert check[1] in lines[0]
    elif kind == "fields":
        assert check[1] in FIELDS_BY_KEY[key].where(flavor).text


def test_deployment_container_is_hardened_and_probed(apis):
    for flavor in ("deployment", "knative"):
        objs = objects(apis["rt"], flavor)
        c = get(objs["Deployment" if flavor == "deployment" else "Service"], *C0)
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == layout.UID
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8888}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8888}
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert c["image"] == IMAGE and c["ports"][0]["containerPort"] == 8888


def test_grace_period_outlasts_the_request_timeout(apis):
    pod = get(objects(apis["rt"], "deployment")["Deployment"], *POD)
    assert pod["terminationGracePeriodSeconds"] > layout.REQUEST_TIMEOUT_SECONDS + layout.PRESTOP_SLEEP_SECONDS
    assert get(objects(apis["rt"], "knative")["Service"], *KN_POD)["timeoutSeconds"] == layout.REQUEST_TIMEOUT_SECONDS


def test_report_names_the_cluster_requirements(apis):
    text = report(apis["rt"], "deployment")
    assert "Prometheus adapter" in text
    assert "NVIDIA device plugin" in text
    assert ".env (FROM_DOTENV, MODE)" in text
    kn = report(apis["rt"], "knative")
    assert "container-concurrency-max-limit" in kn
    assert "credentials" in report(apis["tf"], "deployment")  # s3:// model


def test_ingress_class_and_namespace_options(apis):
    out = manifests(apis["rt"], IMAGE, {}, ExportOptions(namespace="ml", ingress_class="nginx"))
    assert {o["metadata"]["namespace"] for o in out} == {"ml"}
    ing = next(o for o in out if o["kind"] == "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Exact"


def test_models_outside_the_project_get_their_own_folder_in_the_image(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "predictor.py").write_text(
        "class ONNXPredictor:\n    def __init__(self, onnx_client, config):\n        pass\n"
        "    def predict(self, payload):\n        return 1\n")
    (tmp_path / "shared" / "net").mkdir(parents=True)
    (tmp_path / "shared" / "net" / "m.onnx").write_bytes(b"x")
    text = ("- name: a\n  kind: RealtimeAPI\n  predictor:\n    type: onnx\n    path: predictor.py\n"
            "    model_path: ../shared/net\n")
    spec = load_documents(text, str(project / "cortex.yaml"), str(project)).apis[0]
    assert image_spec(spec)["predictor"]["model_path"] == "/opt/cortexd/models/1-net"
    files = layout.bundle_files(spec, {str(tmp_path / "shared/net/m.onnx"): b"x",
                                       str(project / "predictor.py"): b"p"}, b"{}")
    assert set(files) == {"models/1-net/m.onnx", "project/predictor.py", "spec.json", "Dockerfile"}
    assert "COPY --chown=0:10001 models/ /opt/cortexd/models/" in files["Dockerfile"].decode()


def test_image_tag_changes_with_the_code_and_not_otherwise(apis):
    spec = apis["rt"]
    a = layout.image_name("reg.example/team/", spec, {"project/predictor.py": b"v1"})
    assert a.startswith("reg.example/team/rt:")
    assert a == layout.image_name("reg.example/team", spec, {"project/predictor.py": b"v1"})
    assert a != layout.image_name("reg.example/team", spec, {"project/predictor.py": b"v2"})


def test_image_tag_changes_with_the_cortexd_runtime_it_is_built_on(apis):
    # an upgraded cortexd (another predictor runtime) must never push a changed image under an old
    # tag: nodes that have the tag would keep running the old one (imagePullPolicy IfNotPresent)
    spec = apis["rt"]
    files = {str(Path(spec.project_dir) / "predictor.py"): b"v1"}
    old, new = layout.bundle_files(spec, files, b"{}", "aaaa"), layout.bundle_files(spec, files, b"{}", "bbbb")
    assert 'cortexd.runtime="aaaa"' in old["Dockerfile"].decode()
    assert layout.image_name("reg.example", spec, old) != layout.image_name("reg.example", spec, new)
    assert layout.image_name("reg.example", spec, old) == layout.image_name(
        "reg.example", spec, layout.bundle_files(spec, files, b"{}", "aaaa"))


def test_the_runtime_release_follows_the_runtime_source(monkeypatch):
    from cortexd.backends import image_plans

    now = image_plans.runtime_release()
    assert len(now) == 12 and now == image_plans.runtime_release()
    real = image_plans.runtime_files
    monkeypatch.setattr(image_plans, "runtime_files", lambda: {**real(), "server.py": b"# another runtime"})
    assert image_plans.runtime_release() != now


@pytest.mark.parametrize("rel,kept", [
    ("predictor.py", True), ("pkg/mod.py", True), (".env", False), (".git/config", False),
    ("pkg/__pycache__/mod.cpython-311.pyc", False), ("mod.pyc", False), ("cortex.yaml", False),
    ("sub/cortex.yaml", True), ("data/ignored.csv", False), ("logs/x.log", False), ("keep.log", True),
])
def test_project_files_follow_cortex_rules(rel, kept):
    import pathspec

    ignored = pathspec.GitIgnoreSpec.from_lines(["data/", "logs/*.log"])
    assert layout.is_project_file(rel, {"cortex.yaml"}, ignored) is kept


@pytest.mark.parametrize("registry,ok", [
    ("ghcr.io/team", True), ("127.0.0.1:5000", True), ("localhost:5000/a/b", True),
    ("Registry.Example", False), ("reg/with space", False), ("reg:port", False), ("", False),
])
def test_registry_names(registry, ok):
    assert (layout.registry_problem(registry) is None) is ok
