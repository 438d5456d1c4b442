"""Sections written with nothing under them (YAML null): read as left out where Cortex 0.23 did,
refused with the remedy where it refused them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.spec.load import load_documents
from tests.builders import config_problems as problems

API = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: {type}
    path: predictor.py
{predictor_extra}{extra}"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    (tmp_path / "model.onnx").write_bytes(b"")
    return tmp_path


def text(extra: str = "", predictor_extra: str = "", type: str = "python") -> str:
    return API.format(type=type, extra=extra, predictor_extra=predictor_extra)


def load(project: Path, yaml_text: str):
    return load_documents(yaml_text, "cortex.yaml", str(project))


@pytest.mark.parametrize("section", ["compute", "autoscaling", "update_strategy", "monitoring"])
def test_an_empty_api_section_means_what_leaving_it_out_means(project, section):
    (empty,) = load(project, text(f"  {section}:\n")).apis
    (absent,) = load(project, text()).apis
    assert empty == absent
    assert empty.spec_hash == absent.spec_hash  # the same version: nothing rolls


def test_compute_with_its_only_field_commented_out_takes_the_defaults(project):
    """The remedy for compute.gpu on a host without a GPU, as a user applies it."""
    (api,) = load(project, text("  compute:\n    # gpu: 1\n")).apis
    assert (api.compute.gpu, api.compute.cpu, api.compute.mem) == (0, 0.2, None)


def test_empty_predictor_config_and_batching_mean_left_out(project):
    (api,) = load(project, text(predictor_extra="    config:\n")).apis
    assert api.predictor.config == {}
    (onnx,) = load(project, text(predictor_extra="    model_path: model.onnx\n    server_side_batching:\n",
                                 type="onnx")).apis
    assert onnx.predictor.server_side_batching is None


def test_legacy_compute_left_empty_takes_the_legacy_defaults(project):
    (project / "predictor.py").write_text("def predict(sample, metadata):\n    return 1\n")
    (api,) = load(project, "- kind: api\n  name: x\n  python:\n    predictor: predictor.py\n  compute:\n").apis
    assert (api.autoscaling.min_replicas, api.compute.gpu) == (1, 0)


@pytest.mark.parametrize(("extra", "predictor_extra", "where"), [
    ("  networking:\n", "", "cortex.yaml:6:14: api 'iris': networking"),
    ("", "    env:\n", "cortex.yaml:6:9: api 'iris': predictor.env"),
    ("", "    models:\n", "cortex.yaml:6:12: api 'iris': predictor.models"),
])
def test_sections_cortex_refused_empty_are_refused_with_the_remedy(project, extra, predictor_extra, where):
    assert problems(project, text(extra, predictor_extra)) == [
        f"{where}: expected a mapping; found null (the key has nothing under it: give its fields, or "
        "remove the key to use the defaults)"]


def test_an_empty_required_section_is_not_told_to_go(project):
    assert problems(project, "- name: iris\n  kind: RealtimeAPI\n  predictor:\n") == [
        "cortex.yaml:3:13: api 'iris': predictor: expected a mapping; found null (the key has nothing "
        "under it: give its fields)"]
