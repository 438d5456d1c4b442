"""A traffic splitter's export: a Gateway API HTTPRoute, valid against the Gateway API's published v1 CRD
schema (structural, strict, and its CEL rules: tests/gateway_api.py), written beside the APIs'
manifests with a report of what the cluster needs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cortexd.kube.export import export_kubernetes
from cortexd.kube.manifests import TARGET_KUBERNETES, ExportOptions
from cortexd.kube.splitter import GATEWAY_API, http_route
from cortexd.spec.load import load_documents
from tests import gateway_api

PREDICTOR = "class PythonPredictor:\n    def __init__(self, config): pass\n    def predict(self, payload): return 1\n"
CONFIG = """\
- name: a
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- name: b
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- name: mirror
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- name: ab
  kind: TrafficSplitter
  networking: {endpoint: /v1/ab}
  apis:
    - {name: a, weight: 70}
    - {name: b, weight: 30}
    - {name: mirror, weight: 25, shadow: true}
- name: outside
  kind: TrafficSplitter
  apis:
    - {name: a, weight: 100}
    - {name: elsewhere, weight: 0}
"""
K8S = f"{TARGET_KUBERNETES}.0"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text(PREDICTOR)
    (tmp_path / "cortex.yaml").write_text(CONFIG)
    return tmp_path


def splitters(project: Path):
    loaded = load_documents(CONFIG, str(project / "cortex.yaml"), str(project))
    return loaded, {s.name: s for s in loaded.splitters}


def test_the_vendored_schema_is_the_gateway_api_release_the_export_targets():
    crd = gateway_api.load()
    assert (crd["bundle_version"], crd["channel"], crd["kind"], crd["version"]) == (GATEWAY_API, "standard",
                                                                                      "HTTPRoute", "v1")


def test_the_route_has_weighted_backend_refs_and_a_mirror(project):
    _, split = splitters(project)
    route = http_route(split["ab"], ExportOptions(namespace="ml", gateway="edge"))
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    assert route["metadata"] == {"name": "ab", "namespace": "ml", "labels": {
        "app.kubernetes.io/name": "ab", "app.kubernetes.io/component": "traffic-splitter"}}
    (rule,) = route["spec"]["rules"]
    assert route["spec"]["parentRefs"] == [{"name": "edge"}]
    assert rule["matches"] == [{"path": {"type": "Exact", "value": "/v1/ab"}}]
    assert rule["backendRefs"] == [{"kind": "Service", "name": "a", "port": 80, "weight": 70},
                                   {"kind": "Service", "name": "b", "port": 80, "weight": 30}]
    assert rule["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"kind": "Service", "name": "mirror", "port": 80}, "percent": 25}}]


@pytest.mark.parametrize("flavor", ["deployment", "knative"])
def test_exported_routes_validate_against_the_gateway_api_schema(project, tmp_path, flavor):
    loaded, _ = splitters(project)
    out = tmp_path / "k8s"
    lines = export_kubernetes(list(loaded.apis), "registry.example/team", ExportOptions(flavor=flavor), out,
                              splitters=list(loaded.splitters))
    routes = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
              if d and d["kind"] == "HTTPRoute"]
    assert sorted(r["metadata"]["name"] for r in routes) == ["ab", "outside"]
    for route in routes:
        assert gateway_api.problems(route, K8S) == []
    report = (out / "cortexd-report.txt").read_text()
    assert report == "\n".join(lines[:-1]) + "\n"
    assert f"HTTPRoutes the Gateway API's standard channel {GATEWAY_API}" in report
    assert "traffic splitter 'ab': wrote ab.yaml (HTTPRoute ab)" in report
    assert "the cluster needs a Gateway API implementation with the Gateway API CRDs (standard channel " \
           "v1.3.0 or later), and a Gateway named 'cortexd'" in report
    assert "api(s) elsewhere are not in this configuration: their Services (port 80) must exist" in report
    assert "RequestMirror" in report
    assert ("ExternalName" in report) == (flavor == "knative")


def test_the_validator_refuses_what_the_api_server_would(project):
    """The checks bite: an unknown field, a bad weight, a mirror with percent and fraction (a CEL rule)."""
    _, split = splitters(project)
    good = http_route(split["ab"], ExportOptions())
    assert gateway_api.problems(good, K8S) == []
    unknown = copy.deepcopy(good)
    unknown["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    assert any("wieght" in p for p in gateway_api.problems(unknown, K8S))
    heavy = copy.deepcopy(good)
    heavy["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2_000_000
    assert any("backendRefs.0.weight" in p for p in gateway_api.problems(heavy, K8S))
    both = copy.deepcopy(good)
    both["spec"]["rules"][0]["filters"][0]["requestMirror"]["fraction"] = {"numerator": 1}
    assert any("Only one of percent or fraction" in p for p in gateway_api.problems(both, K8S))
    no_port = copy.deepcopy(good)
    del no_port["spec"]["rules"][0]["backendRefs"][1]["port"]
    assert any("port" in p for p in gateway_api.problems(no_port, K8S))
    bad_meta = copy.deepcopy(good)
    bad_meta["metadata"]["labelz"] = {}
    assert any(p.startswith("metadata:") for p in gateway_api.problems(bad_meta, K8S))
