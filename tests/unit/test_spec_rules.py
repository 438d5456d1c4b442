"""Cortex's cross-field rules, paths and model layouts, rules across APIs and files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from cortexd.errors import ConfigError
from cortexd.spec import load_config
from cortexd.spec.findings import format_path
from cortexd.spec.validate import check_api
from tests.builders import config_problems as problems


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    return tmp_path


def api(**sections: Any) -> dict[str, Any]:
    """A valid python API dict; keyword sections are merged into it (predictor fields merge)."""
    doc: dict[str, Any] = {"name": "api", "kind": "RealtimeAPI",
                           "predictor": {"type": "python", "path": "predictor.py"}}
    for key, value in sections.items():
        if key == "predictor":
            doc["predictor"].update(value)
        else:
            doc[key] = value
    return copy.deepcopy(doc)


def findings(doc: dict[str, Any], project: Path) -> dict[str, str]:
    return {format_path(f.path): f.message for f in check_api(doc, str(project)).findings}




def test_the_base_api_is_valid(project):
    assert findings(api(), project) == {}


# -- models --------------------------------------------------------------------------


def test_model_path_xor_models(project):
    doc = api(predictor={"model_path": "s3://bucket/m", "models": {"dir": "s3://bucket/models"}})
    assert findings(doc, project) == {
        "predictor.models": "cannot be provided along with predictor.model_path; use model_path for one "
                            "model or models for several"}


def test_models_paths_xor_dir(project):
    both = api(predictor={"models": {"dir": "s3://bucket/ms", "paths": [{"name": "a", "model_path": "s3://bucket/a"}]}})
    assert findings(both, project) == {
        "predictor.models.dir": "cannot be provided along with models.paths; give either a list of paths or one dir"}
    neither = api(predictor={"models": {"cache_size": 1, "disk_cache_size": 1}})
    assert findings(neither, project) == {
        "predictor.models": "expected either models.paths (a list of named models) or models.dir (a folder of "
                            "models); found neither"}


def test_model_names_unique(project):
    doc = api(predictor={"models": {"paths": [{"name": "a", "model_path": "s3://bucket/a"},
                                              {"name": "a", "model_path": "s3://bucket/b"}]}})
    assert findings(doc, project) == {
        "predictor.models.paths[1].name": "duplicate model name 'a' (also used by predictor.models.paths[0])"}


def test_cache_sizes_both_or_neither(project):
    doc = api(predictor={"models": {"dir": "s3://bucket/ms", "cache_size": 2}})
    assert findings(doc, project) == {
        "predictor.models.cache_size": "cache_size and disk_cache_size must be given together; found cache_size "
                                       "without disk_cache_size"}
    doc = api(predictor={"models": {"dir": "s3://bucket/ms", "disk_cache_size": 2}})
    assert findings(doc, project) == {
        "predictor.models.disk_cache_size": "cache_size and disk_cache_size must be given together; found "
                                            "disk_cache_size without cache_size"}


def test_cache_sizes_positive_and_ordered(project):
    doc = api(predictor={"models": {"dir": "s3://bucket/ms", "cache_size": 0, "disk_cache_size": 2}})
    assert findings(doc, project) == {"predictor.models.cache_size": "expected a value >= 1; found 0"}
    doc = api(predictor={"models": {"dir": "s3://bucket/ms", "cache_size": 3, "disk_cache_size": 2}})
    assert findings(doc, project) == {
        "predictor.models.cache_size": "expected a value <= disk_cache_size (2); found 3"}


def test_caching_requires_one_process(project):
    doc = api(predictor={"processes_per_replica": 2,
                         "models": {"dir": "s3://bucket/ms", "cache_size": 1, "disk_cache_size": 2}})
    assert findings(doc, project) == {
        "predictor.processes_per_replica": "model caching (cache_size / disk_cache_size) requires "
                                           "processes_per_replica to be 1; found 2"}


@pytest.mark.parametrize("ptype", ["tensorflow", "onnx"])
def test_tensorflow_and_onnx_need_a_model(project, ptype):
    doc = api(predictor={"type": ptype})
    assert findings(doc, project) == {
        "predictor": f"a {ptype} predictor needs a model: set predictor.model_path (one model) or "
                     "predictor.models (several)"}


# -- batching -------------------------------------------------------------------------


def tf_api(**predictor: Any) -> dict[str, Any]:
    return api(predictor={"type": "tensorflow", "model_path": "s3://bucket/m", **predictor})


def test_max_batch_size_within_processes_times_threads(project):
    doc = tf_api(processes_per_replica=2, threads_per_process=2,
                 server_side_batching={"max_batch_size": 8, "batch_interval": "100ms"})
    assert findings(doc, project) == {
        "predictor.server_side_batching.max_batch_size": "expected a value <= processes_per_replica * "
        "threads_per_process (2 * 2 = 4), so that a full batch can be in flight; found 8 (raise "
        "threads_per_process or lower max_batch_size)"}
    ok = tf_api(processes_per_replica=2, threads_per_process=2,
                server_side_batching={"max_batch_size": 4, "batch_interval": "100ms"})
    assert findings(ok, project) == {}


def test_batch_interval_positive(project):
    doc = tf_api(threads_per_process=2, server_side_batching={"max_batch_size": 2, "batch_interval": "0s"})
    assert findings(doc, project) == {
        "predictor.server_side_batching.batch_interval": "expected a duration > 0 such as \"100ms\"; found '0s'"}


# -- autoscaling ----------------------------------------------------------------------


def test_min_not_above_max(project):
    assert findings(api(autoscaling={"min_replicas": 3, "max_replicas": 2}), project) == {
        "autoscaling.min_replicas": "expected a value <= max_replicas (2); found 3"}


def test_init_between_min_and_max(project):
    assert findings(api(autoscaling={"min_replicas": 2, "init_replicas": 1}), project) == {
        "autoscaling.init_replicas": "expected a value >= min_replicas (2); found 1"}
    assert findings(api(autoscaling={"max_replicas": 3, "init_replicas": 4}), project) == {
        "autoscaling.init_replicas": "expected a value <= max_replicas (3); found 4"}


def test_target_concurrency_within_max(project):
    doc = api(autoscaling={"target_replica_concurrency": 20, "max_replica_concurrency": 10})
    assert findings(doc, project) == {
        "autoscaling.target_replica_concurrency": "expected a value <= max_replica_concurrency (10); found 20"}
    derived = api(predictor={"threads_per_process": 20}, autoscaling={"max_replica_concurrency": 10})
    assert findings(derived, project) == {
        "autoscaling.target_replica_concurrency": "expected a value <= max_replica_concurrency (10); found 20 "
        "(the default, processes_per_replica * threads_per_process)"}


@pytest.mark.parametrize("window, message", [
    ("5s", "expected a duration of at least 10s; found '5s'"),
    ("0s", "expected a duration of at least 10s; found '0s'"),
    ("15s", "expected a multiple of 10s (the autoscaler decides every 10s), such as \"60s\" or \"1m30s\"; "
            "found '15s'"),
    ("10500ms", "expected a multiple of 10s (the autoscaler decides every 10s), such as \"60s\" or \"1m30s\"; "
                "found '10500ms'"),
])
def test_window_at_least_and_multiple_of_10s(project, window, message):
    assert findings(api(autoscaling={"window": window}), project) == {"autoscaling.window": message}


@pytest.mark.parametrize("window", ["10s", "1m30s", "2h", "20000ms"])
def test_good_windows(project, window):
    assert findings(api(autoscaling={"window": window}), project) == {}


def test_stabilization_periods_may_be_zero(project):
    doc = api(autoscaling={"downscale_stabilization_period": "0s", "upscale_stabilization_period": "0"})
    assert findings(doc, project) == {}


# -- update strategy, env, compute, networking ---------------------------------------------


@pytest.mark.parametrize("surge, unavailable", [(0, 0), ("0%", 0), (0, "0%"), ("0", "0%")])
def test_surge_and_unavailable_not_both_zero(project, surge, unavailable):
    doc = api(update_strategy={"max_surge": surge, "max_unavailable": unavailable})
    assert findings(doc, project) == {
        "update_strategy": "max_surge and max_unavailable cannot both be 0 (a rolling update could never make "
                           "progress); set one of them above 0"}


def test_surge_zero_alone_is_fine(project):
    assert findings(api(update_strategy={"max_surge": 0}), project) == {}


def test_env_keys_may_not_start_with_cortex(project):
    doc = api(predictor={"env": {"CORTEX_PORT": "1", "MY_VAR": "x"}})
    assert findings(doc, project) == {
        "predictor.env.CORTEX_PORT": "environment variable names starting with CORTEX_ are reserved for "
                                     "cortexd; rename it"}


def test_env_values_are_strings(project):
    assert findings(api(predictor={"env": {"N": 3}}), project) == {
        "predictor.env.N": "expected a string; found the integer 3 (quote it: \"3\")"}


def test_inferentia_refused(project):
    assert findings(api(compute={"inf": 1}), project) == {
        "compute.inf": "Inferentia (compute.inf) is not available on one host; remove it or set it to 0 (found 1)"}
    assert findings(api(compute={"inf": 0}), project) == {}


def test_api_gateway_is_a_notice_not_an_error(project):
    checked = check_api(api(networking={"api_gateway": "none"}), str(project))
    assert checked.findings == []
    assert [n.message for n in checked.notices] == ["networking.api_gateway is ignored on one host"]
    assert check_api(api(), str(project)).notices == []
    assert findings(api(networking={"api_gateway": "private"}), project) == {
        "networking.api_gateway": "expected one of public, none; found the string 'private'"}


@pytest.mark.parametrize("port, ok", [(1, True), (65535, True), (0, False), (65536, False)])
def test_local_port_bounds(project, port, ok):
    result = findings(api(networking={"local_port": port}), project)
    assert (result == {}) is ok


@pytest.mark.parametrize("endpoint, normalised", [
    ("predict", "/predict"), ("/predict", "/predict"), ("/predict/", "/predict"), ("a/b.c/d_e~f-g", "/a/b.c/d_e~f-g"),
])
def test_endpoint_normalised(project, endpoint, normalised):
    assert check_api(api(networking={"endpoint": endpoint}), str(project)).doc["networking"]["endpoint"] == normalised


@pytest.mark.parametrize("endpoint", ["/a/../b", "..", "/a//b", "//a", "/a?x=1", "/a#b", "/", "", "/a b", "/%2e%2e",
                                      "/./a"])
def test_unsafe_endpoints_refused(project, endpoint):
    assert findings(api(networking={"endpoint": endpoint}), project) == {
        "networking.endpoint": 'expected a URL path such as "/iris-classifier" (letters, digits, "-", "_", ".", "~" '
                               'and single "/" between segments; no "." or ".." segments, no query string); '
                               f"found the string {endpoint!r}"}


def test_monitoring_model_type_required(project):
    assert findings(api(monitoring={"key": "label"}), project) == {
        "monitoring.model_type": "missing required field; expected \"classification\" or \"regression\", so "
                                 "responses can be interpreted correctly"}


# -- paths ---------------------------------------------------------------------------


def test_missing_predictor_file_points_at_the_path_line(project):
    text = "- name: a\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: src/missing.py\n"
    assert problems(project, text) == [
        f"cortex.yaml:5:11: api 'a': predictor.path: file not found: {project / 'src' / 'missing.py'} "
        f"(relative paths start at the cortex.yaml folder, {project})"]


def test_predictor_must_be_a_py_file(project):
    (project / "pkg").mkdir()
    assert findings(api(predictor={"path": "pkg"}), project) == {
        "predictor.path": f"expected a python file; found a folder: {project / 'pkg'}"}


def test_paths_resolve_from_the_project_dir(project):
    (project / "src").mkdir()
    (project / "src" / "p.py").write_text("")
    doc = check_api(api(predictor={"path": "src/p.py", "python_path": "src", "model_path": "weights"}),
                    str(project))
    assert doc.findings == [doc.findings[0]] and format_path(doc.findings[0].path) == "predictor.model_path"
    assert doc.doc["predictor"]["path"] == str(project / "src" / "p.py")
    assert doc.doc["predictor"]["python_path"] == str(project / "src")
    assert doc.findings[0].message == (f"not found: {project / 'weights'} (relative paths start at the "
                                       f"cortex.yaml folder, {project})")


def test_python_path_must_be_a_folder(project):
    assert findings(api(predictor={"python_path": "nowhere"}), project) == {
        "predictor.python_path": f"expected a folder; found nothing at {project / 'nowhere'}"}


def test_s3_paths_are_accepted_without_network(project):
    doc = api(predictor={"type": "onnx", "models": {"paths": [{"name": "a", "model_path": "s3://my-bucket/a/b.onnx"}],
                                                    "cache_size": 1, "disk_cache_size": 1}})
    checked = check_api(doc, str(project))
    assert checked.findings == []
    assert checked.doc["predictor"]["models"]["paths"][0]["model_path"] == "s3://my-bucket/a/b.onnx"


def test_bad_urls_refused(project):
    assert findings(api(predictor={"model_path": "s3://B!/x"}), project) == {
        "predictor.model_path": "expected an S3 URL such as s3://my-bucket/path/to/model; found 's3://B!/x'"}
    assert findings(api(predictor={"model_path": "gs://bucket/x"}), project) == {
        "predictor.model_path": "only local paths and s3:// URLs are supported; found 'gs://bucket/x'"}


def make(root: Path, *files: str) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    return root


def test_tensorflow_savedmodel_layouts(project):
    make(project, "flat/saved_model.pb", "flat/variables/variables.index", "versioned/1/saved_model.pb",
         "versioned/2/saved_model.pb", "bad/model.h5", "badversion/1/saved_model.pb", "badversion/2/x.txt")
    for ok in ("flat", "versioned"):
        assert findings(tf_api(model_path=ok), project) == {}
    expected = ("expected a TensorFlow SavedModel folder (saved_model.pb, or integer version folders such as "
                "1/saved_model.pb)")
    assert findings(tf_api(model_path="bad"), project) == {
        "predictor.model_path": f"{expected}; found model.h5 in {project / 'bad'}"}
    assert findings(tf_api(model_path="badversion"), project) == {
        "predictor.model_path": f"{expected}; version folder 2/ holds x.txt"}
    assert findings(tf_api(model_path="bad/model.h5"), project) == {
        "predictor.model_path": f"{expected}; found a file: {project / 'bad' / 'model.h5'}"}


def onnx_api(**predictor: Any) -> dict[str, Any]:
    return api(predictor={"type": "onnx", **predictor})


def test_onnx_layouts(project):
    make(project, "one/m.onnx", "file.onnx", "v/1/a.onnx", "v/2/b.onnx", "two/a.onnx", "two/b.onnx",
         "empty/readme.txt", "vbad/1/a.onnx", "vbad/1/b.onnx", "model.pkl")
    for ok in ("one", "file.onnx", "v"):
        assert findings(onnx_api(model_path=ok), project) == {}, ok
    expected = ("expected a .onnx file, a folder with exactly one .onnx file, or integer version folders each "
                "holding exactly one .onnx file")
    assert findings(onnx_api(model_path="two"), project) == {
        "predictor.model_path": f"{expected}; found 2 .onnx files in {project / 'two'}: a.onnx, b.onnx"}
    assert findings(onnx_api(model_path="empty"), project) == {
        "predictor.model_path": f"{expected}; found readme.txt in {project / 'empty'}"}
    assert findings(onnx_api(model_path="vbad"), project) == {
        "predictor.model_path": f"{expected}; version folder 1/ holds 2 .onnx files: a.onnx, b.onnx"}
    assert findings(onnx_api(model_path="model.pkl"), project) == {
        "predictor.model_path": f"{expected}; found the file {project / 'model.pkl'}"}


def test_models_dir_each_subfolder_is_a_model(project):
    make(project, "models/a/m.onnx", "models/b/1/m.onnx", "models/README.md", "models/.cache/x")
    assert findings(onnx_api(models={"dir": "models"}), project) == {}
    make(project, "models/c/notes.txt")
    assert findings(onnx_api(models={"dir": "models"}), project) == {
        "predictor.models.dir": "model 'c': expected a .onnx file, a folder with exactly one .onnx file, or integer "
                                f"version folders each holding exactly one .onnx file; found notes.txt in "
                                f"{project / 'models' / 'c'}"}
    make(project, "flat/x.txt")
    assert findings(onnx_api(models={"dir": "flat"}), project) == {
        "predictor.models.dir": f"expected one folder per model; found x.txt in {project / 'flat'}"}


def test_models_paths_local_layout(project):
    make(project, "m1/saved_model.pb")
    doc = tf_api(model_path=None)
    del doc["predictor"]["model_path"]
    doc["predictor"]["models"] = {"paths": [{"name": "a", "model_path": "m1"}, {"name": "b", "model_path": "m2"}]}
    assert findings(doc, project) == {
        "predictor.models.paths[1].model_path": f"not found: {project / 'm2'} (relative paths start at the "
                                                f"cortex.yaml folder, {project})"}


def test_python_models_may_be_any_folder(project):
    make(project, "anything/weights.bin")
    assert findings(api(predictor={"model_path": "anything"}), project) == {}
    assert findings(api(predictor={"models": {"dir": "."}}), project) == {}


# -- rules across APIs and files -----------------------------------------------------------


TWO = """\
- name: a
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- name: a
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
  networking: {endpoint: other}
- name: b
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
  networking: {endpoint: /a/}
- name: c
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
  networking: {endpoint: /a, local_port: 9000}
"""


def test_names_unique_and_endpoints_unique_per_port(project):
    assert problems(project, TWO) == [
        "cortex.yaml:4:9: api 'a': name: api name 'a' is already used by the api at cortex.yaml:1; api names "
        "must be unique",
        "cortex.yaml:11:26: api 'b': networking.endpoint: endpoint /a on port 8888 is already used by api 'a' "
        "(cortex.yaml:1); give one of them another networking.endpoint or networking.local_port",
    ]


def test_names_unique_across_files(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "predictor.py").write_text("")
        (tmp_path / folder / "cortex.yaml").write_text(
            f"- name: same\n  kind: RealtimeAPI\n  predictor: {{type: python, path: predictor.py}}\n"
            f"  networking: {{endpoint: {folder}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path / "one"), str(tmp_path / "two" / "cortex.yaml")])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'two' / 'cortex.yaml'}:1:9: api 'same': name: api name 'same' is already used by the api "
        f"at {tmp_path / 'one' / 'cortex.yaml'}:1; api names must be unique"]


def test_load_config_reads_folders_and_files(tmp_path):
    (tmp_path / "predictor.py").write_text("")
    (tmp_path / "cortex.yml").write_text("- name: a\n  kind: RealtimeAPI\n  predictor: {type: python, path: "
                                         "predictor.py}\n")
    other = tmp_path / "other.yaml"
    other.write_text("- name: b\n  kind: RealtimeAPI\n  predictor: {type: python, path: predictor.py}\n")
    loaded = load_config([str(tmp_path), str(other), str(other)])
    assert [a.name for a in loaded.apis] == ["a", "b"]
    assert loaded.files == (str(tmp_path / "cortex.yml"), str(other))
    assert loaded.apis[0].source_file == str(tmp_path / "cortex.yml")
    assert loaded.apis[1].project_dir == str(tmp_path)


def test_load_config_names_missing_paths_and_keeps_going(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.yaml").write_text("- name: x\n  kind: RealtimeAPI\n")
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path / "nope"), str(tmp_path / "empty"), str(tmp_path / "bad.yaml")])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'bad.yaml'}:1:3: api 'x': predictor: missing required field; expected a mapping with the "
        "predictor's type (python, tensorflow or onnx), path, and the fields of that type",
        f"{tmp_path / 'empty'}: no cortex.yaml (or cortex.yml) in this folder",
        f"{tmp_path / 'nope'}: no such file or folder",
    ]
    assert str(info.value).startswith("3 configuration errors:\n  ")


def test_load_config_reports_undecodable_files(tmp_path):
    (tmp_path / "cortex.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path)])
    (problem,) = info.value.problems
    assert problem.file == str(tmp_path / "cortex.yaml") and "cannot read the file: not UTF-8" in problem.message


def test_examples_in_the_repository_load():
    repo = Path(__file__).resolve().parents[2]
    loaded = load_config([str(repo / "examples" / "iris-classifier"), str(repo / "examples" / "legacy-iris")])
    assert [(a.name, a.networking.endpoint) for a in loaded.apis] == [
        ("iris-classifier", "/iris-classifier"), ("classifier", "/iris/classifier")]
