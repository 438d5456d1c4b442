"""cortex.yaml parsing: schema errors as sentences, defaults from the schema, units, file:line:column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortexd.core import rollout
from cortexd.spec import units
from cortexd.spec.load import load_documents
from cortexd.spec.schema import SCHEMA_LOCATIONS, load_schema
from cortexd.spec.validate import check_api
from tests.builders import config_problems as problems

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    return tmp_path


def load(project: Path, text: str):
    return load_documents(text, "cortex.yaml", str(project))




MINIMAL = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""


# -- the schema file ---------------------------------------------------------------


def test_schema_lives_at_the_repo_root_and_is_found_first():
    assert SCHEMA_LOCATIONS[0] == REPO / "config_schema.json"
    assert SCHEMA_LOCATIONS[1] == REPO / "cortexd" / "config_schema.json"
    assert load_schema() == json.loads((REPO / "config_schema.json").read_text())


def test_schema_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(load_schema())


# -- defaults ----------------------------------------------------------------------


def test_minimal_python_api_gets_every_documented_default(project):
    (api,) = load(project, MINIMAL).apis
    assert api.name == "iris" and api.kind == "RealtimeAPI"
    p = api.predictor
    assert p.type == "python"
    assert p.path == str(project / "predictor.py")
    assert p.python_path == str(project)
    assert (p.model_path, p.models, p.signature_key, p.server_side_batching) == (None, None, None, None)
    assert (p.processes_per_replica, p.threads_per_process) == (1, 1)
    assert p.config == {} and p.env == {} and p.image is None
    assert (api.networking.endpoint, api.networking.local_port, api.networking.api_gateway) == (
        "/iris", 8888, "public")
    assert (api.compute.cpu, api.compute.gpu, api.compute.inf, api.compute.mem) == (0.2, 0, 0, None)
    a = api.autoscaling
    assert (a.min_replicas, a.max_replicas, a.init_replicas) == (1, 100, 1)
    assert a.target_replica_concurrency == 1.0
    assert a.max_replica_concurrency == 1024
    assert (a.window, a.downscale_stabilization_period, a.upscale_stabilization_period) == (60.0, 300.0, 60.0)
    assert (a.max_downscale_factor, a.max_upscale_factor) == (0.75, 1.5)
    assert (a.downscale_tolerance, a.upscale_tolerance) == (0.05, 0.05)
    assert a.target_cpu_utilization is None
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == (units.Percent(25),) * 2
    assert api.monitoring is None
    assert api.project_dir == str(project) and api.source_file == "cortex.yaml" and api.source_line == 1


def test_raw_is_the_defaulted_document_with_resolved_paths(project):
    (api,) = load(project, MINIMAL).apis
    assert api.raw["autoscaling"]["window"] == "60s"
    assert api.raw["compute"]["cpu"] == "200m"
    assert api.raw["predictor"]["path"] == str(project / "predictor.py")
    assert api.raw["networking"]["endpoint"] == "/iris"
    changed = load(project, MINIMAL + "  compute:\n    cpu: 1\n").apis[0]
    assert changed.spec_hash != api.spec_hash
    assert load(project, MINIMAL).apis[0].spec_hash == api.spec_hash


def test_defaults_come_from_the_schema_file():
    schema = load_schema()["$defs"]
    doc = check_api({"name": "a", "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "p.py"}},
                    "/nowhere").doc
    assert doc["autoscaling"]["max_replica_concurrency"] == \
        schema["autoscaling"]["properties"]["max_replica_concurrency"]["default"]
    assert doc["autoscaling"]["window"] == schema["autoscaling"]["properties"]["window"]["default"]
    assert doc["predictor"]["processes_per_replica"] == schema["processes_per_replica"]["default"]
    assert doc["update_strategy"]["max_surge"] == schema["update_strategy"]["properties"]["max_surge"]["default"]


def test_dependent_defaults(project):
    (api,) = load(project, MINIMAL + """\
    processes_per_replica: 2
    threads_per_process: 3
  autoscaling:
    min_replicas: 4
""").apis
    assert api.autoscaling.init_replicas == 4
    assert api.autoscaling.target_replica_concurrency == 6.0


def test_every_field_of_the_reference_parses(project):
    (project / "tf" / "1").mkdir(parents=True)
    (project / "tf" / "1" / "saved_model.pb").write_bytes(b"")
    text = """\
- name: full
  kind: RealtimeAPI
  predictor:
    type: tensorflow
    path: predictor.py
    models:
      paths:
        - name: text-generator
          model_path: tf
          signature_key: serving_default
        - name: other_model
          model_path: s3://my-bucket/exported_model/
      signature_key: predict
      cache_size: 1
      disk_cache_size: 2
    server_side_batching:
      max_batch_size: 2
      batch_interval: 100ms
    processes_per_replica: 1
    threads_per_process: 2
    config: {labels: [a, b], nested: {x: 1}}
    python_path: .
    image: my/image:1
    tensorflow_serving_image: quay.io/cortexlabs/tensorflow-serving-cpu:0.23.0
    env: {LOG_LEVEL: debug}
  networking:
    endpoint: my/endpoint/
    local_port: 9000
    api_gateway: none
  compute:
    cpu: 1500m
    gpu: 1
    inf: 0
    mem: 1Gi
  monitoring:
    model_type: classification
    key: label
  autoscaling:
    min_replicas: 2
    max_replicas: 5
    init_replicas: 3
    target_replica_concurrency: 1.5
    max_replica_concurrency: 100
    window: 1m30s
    downscale_stabilization_period: 0s
    upscale_stabilization_period: 10s
    max_downscale_factor: 0.5
    max_upscale_factor: 2
    downscale_tolerance: 0.1
    upscale_tolerance: 0.2
  update_strategy:
    max_surge: 1
    max_unavailable: 0%
"""
    loaded = load(project, text)
    (api,) = loaded.apis
    p = api.predictor
    assert p.type == "tensorflow" and p.signature_key is None
    assert [(m.name, m.path, m.signature_key) for m in p.models.paths] == [
        ("text-generator", str(project / "tf"), "serving_default"),
        ("other_model", "s3://my-bucket/exported_model/", None)]
    assert (p.models.signature_key, p.models.cache_size, p.models.disk_cache_size) == ("predict", 1, 2)
    assert (p.server_side_batching.max_batch_size, p.server_side_batching.batch_interval) == (2, 0.1)
    assert p.config == {"labels": ["a", "b"], "nested": {"x": 1}}
    assert p.image == "my/image:1" and p.env == {"LOG_LEVEL": "debug"}
    assert (api.networking.endpoint, api.networking.local_port, api.networking.api_gateway) == (
        "/my/endpoint", 9000, "none")
    assert (api.compute.cpu, api.compute.gpu, api.compute.mem) == (1.5, 1, 2**30)
    assert (api.monitoring.model_type, api.monitoring.key) == ("classification", "label")
    a = api.autoscaling
    assert (a.min_replicas, a.max_replicas, a.init_replicas, a.target_replica_concurrency) == (2, 5, 3, 1.5)
    assert (a.window, a.downscale_stabilization_period, a.upscale_stabilization_period) == (90.0, 0.0, 10.0)
    assert (a.max_downscale_factor, a.max_upscale_factor, a.downscale_tolerance, a.upscale_tolerance) == (
        0.5, 2.0, 0.1, 0.2)
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == (1, units.Percent(0))
    assert loaded.notices == (
        "cortex.yaml:24: api 'full': predictor.tensorflow_serving_image is ignored: cortexd runs "
        "TensorFlow models in the predictor process",
        "cortex.yaml:29: api 'full': networking.api_gateway is ignored on one host",
    )


def test_onnx_accepts_server_side_batching(project):
    (project / "m.onnx").write_bytes(b"")
    (api,) = load(project, """\
- name: o
  kind: RealtimeAPI
  predictor:
    type: onnx
    path: predictor.py
    model_path: m.onnx
    threads_per_process: 4
    server_side_batching: {max_batch_size: 4, batch_interval: 10ms}
""").apis
    assert api.predictor.server_side_batching.max_batch_size == 4
    assert api.predictor.model_path == str(project / "m.onnx")


# -- schema errors as sentences, located -------------------------------------------------


def test_type_error_names_file_line_column_field_expected_and_found(project):
    assert problems(project, MINIMAL + "  autoscaling:\n    min_replicas: three\n") == [
        "cortex.yaml:7:19: api 'iris': autoscaling.min_replicas: expected an integer; found the string 'three'"
    ]


def test_line_numbers_in_a_long_multi_api_file(project):
    text = """\
# two APIs
- name: first
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py

- name: second
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    models:
      paths:
        - name: ok
          model_path: s3://bucket/a
        - name: not ok!
          model_path: s3://bucket/b
  compute:
    gpu: -1
"""
    assert problems(project, text) == [
        "cortex.yaml:17:17: api 'second': predictor.models.paths[1].name: expected a model name of letters, "
        "digits, '-' and '_' (e.g. text-generator); found the string 'not ok!'",
        "cortex.yaml:20:10: api 'second': compute.gpu: expected a value >= 0; found -1",
    ]


def test_all_problems_of_a_file_are_reported_together(project):
    text = MINIMAL + """\
  compute:
    cpu: lots
  autoscaling:
    max_replica_concurrency: 40000
    min_replicas: 3
    max_replicas: 2
"""
    assert problems(project, text) == [
        "cortex.yaml:7:10: api 'iris': compute.cpu: expected a CPU quantity such as 1, 0.5 or \"200m\" "
        "(200 millicores = 0.2 cores); found the string 'lots'",
        "cortex.yaml:9:30: api 'iris': autoscaling.max_replica_concurrency: expected a value <= 30000; found 40000",
        "cortex.yaml:10:19: api 'iris': autoscaling.min_replicas: expected a value <= max_replicas (2); found 3",
    ]


def test_errors_of_several_apis_and_documents_together(project):
    text = MINIMAL + "  networking: {local_port: 0}\n---\n" + MINIMAL.replace("iris", "other") + \
        "  compute: {gpu: one}\n"
    assert problems(project, text) == [
        "cortex.yaml:6:28: api 'iris': networking.local_port: expected a value >= 1; found 0",
        "cortex.yaml:13:18: api 'other': compute.gpu: expected an integer; found the string 'one'",
    ]


def test_unknown_field_points_at_the_key_and_suggests(project):
    assert problems(project, MINIMAL + "  autoscaling:\n    minreplicas: 2\n") == [
        "cortex.yaml:7:5: api 'iris': autoscaling.minreplicas: unknown field 'minreplicas'; did you mean "
        "'min_replicas'? (valid fields here: min_replicas, max_replicas, init_replicas, "
        "target_replica_concurrency, max_replica_concurrency, window, downscale_stabilization_period, "
        "upscale_stabilization_period, max_downscale_factor, max_upscale_factor, downscale_tolerance, "
        "upscale_tolerance)"
    ]


def test_unknown_top_level_field(project):
    assert problems(project, MINIMAL + "  replicas: 3\n") == [
        "cortex.yaml:6:3: api 'iris': replicas: unknown field 'replicas' (valid fields here: name, kind, "
        "predictor, networking, compute, monitoring, autoscaling, update_strategy)"
    ]


def test_config_and_env_are_open_mappings(project):
    (api,) = load(project, MINIMAL + "    config: {anything: [1, {deep: true}]}\n    env: {MY_VAR: x}\n").apis
    assert api.predictor.config == {"anything": [1, {"deep": True}]}
    assert api.predictor.env == {"MY_VAR": "x"}


@pytest.mark.parametrize("field, value, ptype, owners", [
    ("signature_key", "x", "python", "tensorflow predictors only"),
    ("signature_key", "x", "onnx", "tensorflow predictors only"),
    ("tensorflow_serving_image", "x", "onnx", "tensorflow predictors only"),
    ("server_side_batching", "{max_batch_size: 2, batch_interval: 1s}", "python",
     "tensorflow and onnx predictors only"),
])
def test_fields_of_other_predictor_types_are_refused_naming_the_type(project, field, value, ptype, owners):
    text = f"""\
- name: a
  kind: RealtimeAPI
  predictor:
    type: {ptype}
    path: predictor.py
    model_path: s3://bucket/model
    {field}: {value}
"""
    assert problems(project, text) == [
        f"cortex.yaml:7:5: api 'a': predictor.{field}: {field!r} is not supported for predictor type "
        f"{ptype!r} ({owners})"
    ]


def test_models_signature_key_is_tensorflow_only(project):
    text = MINIMAL + "    models:\n      dir: s3://bucket/models\n      signature_key: x\n"
    assert problems(project, text) == [
        "cortex.yaml:8:7: api 'iris': predictor.models.signature_key: 'signature_key' is not supported for "
        "predictor type 'python' (tensorflow predictors only)"
    ]


def test_missing_required_fields_point_at_the_enclosing_key(project):
    text = "- name: a\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
    assert problems(project, text) == [
        "cortex.yaml:3:3: api 'a': predictor.path: missing required field; expected path to a python file "
        "with a PythonPredictor class definition, relative to the cortex.yaml folder"
    ]
    assert problems(project, "- kind: RealtimeAPI\n  predictor: {type: python, path: predictor.py}\n") == [
        "cortex.yaml:1:3: name: missing required field; expected API name (required): a DNS-1035 label: "
        "lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, "
        "at most 63 characters"
    ]


def test_bad_predictor_type(project):
    assert problems(project, "- name: a\n  kind: RealtimeAPI\n  predictor: {type: pytorch, path: p.py}\n") == [
        "cortex.yaml:3:21: api 'a': predictor.type: expected one of python, tensorflow, onnx; "
        "found the string 'pytorch'"
    ]


def test_enum_and_string_type_messages(project):
    text = MINIMAL + "  monitoring:\n    model_type: clustering\n    key: 5\n"
    assert problems(project, text) == [
        "cortex.yaml:7:17: api 'iris': monitoring.model_type: expected one of classification, regression; "
        "found the string 'clustering'",
        "cortex.yaml:8:10: api 'iris': monitoring.key: expected a string; found the integer 5 (quote it: \"5\")",
    ]


@pytest.mark.parametrize("name, ok", [
    ("iris-classifier", True), ("a", True), ("a1-b2", True), ("a" * 63, True),
    ("a" * 64, False), ("Iris", False), ("1abc", False), ("abc-", False), ("my_api", False), ("", False),
])
def test_api_names_are_dns_1035(project, name, ok):
    text = MINIMAL.replace("name: iris", f"name: '{name}'")
    if ok:
        assert load(project, text).apis[0].name == name
    else:
        (msg,) = problems(project, text)
        assert msg.startswith("cortex.yaml:1:9: ") and "name: expected a DNS-1035 name (lowercase letters" in msg
        assert "found the string" in msg


@pytest.mark.parametrize("field, value, expected", [
    ("processes_per_replica", 0, "expected a value >= 1; found 0"),
    ("processes_per_replica", 101, "expected a value <= 100; found 101"),
    ("threads_per_process", 0, "expected a value >= 1; found 0"),
])
def test_predictor_bounds(project, field, value, expected):
    (msg,) = problems(project, MINIMAL + f"    {field}: {value}\n")
    assert msg == f"cortex.yaml:6:{len(field) + 7}: api 'iris': predictor.{field}: {expected}"


@pytest.mark.parametrize("field, value, expected", [
    ("min_replicas", 0, "expected a value >= 1; found 0"),
    ("max_replicas", 0, "expected a value >= 1; found 0"),
    ("init_replicas", 0, "expected a value >= 1; found 0"),
    ("target_replica_concurrency", 0, "expected a value > 0; found 0"),
    ("max_replica_concurrency", 30001, "expected a value <= 30000; found 30001"),
    ("max_downscale_factor", 1, "expected a value < 1; found 1"),
    ("max_downscale_factor", -0.1, "expected a value >= 0; found -0.1"),
    ("max_upscale_factor", 1, "expected a value > 1; found 1"),
    ("downscale_tolerance", 1, "expected a value < 1; found 1"),
    ("upscale_tolerance", -1, "expected a value >= 0; found -1"),
])
def test_autoscaling_bounds(project, field, value, expected):
    (msg,) = problems(project, MINIMAL + f"  autoscaling:\n    {field}: {value}\n")
    assert msg == f"cortex.yaml:7:{len(field) + 7}: api 'iris': autoscaling.{field}: {expected}"


def test_batching_bounds(project):
    text = """\
- name: t
  kind: RealtimeAPI
  predictor:
    type: tensorflow
    path: predictor.py
    model_path: s3://bucket/m
    threads_per_process: 4
    server_side_batching:
      max_batch_size: 1025
"""
    assert problems(project, text) == [
        "cortex.yaml:8:5: api 't': predictor.server_side_batching.batch_interval: missing required field; "
        "expected the maximum amount of time to spend waiting for additional requests before running "
        "inference on the batch of requests (> 0)",
        "cortex.yaml:9:23: api 't': predictor.server_side_batching.max_batch_size: expected a value <= 1024; "
        "found 1025",
    ]
    (msg,) = problems(project, text.replace("1025", "1\n      batch_interval: 1s"))
    assert msg.endswith("predictor.server_side_batching.max_batch_size: expected a value >= 2; found 1")


def test_durations_need_units(project):
    assert problems(project, MINIMAL + "  autoscaling:\n    window: 60\n") == [
        "cortex.yaml:7:13: api 'iris': autoscaling.window: expected a duration such as \"10s\", \"5m\", \"1h\", "
        "\"1m30s\" or \"100ms\"; found the integer 60 (a number needs a unit, e.g. \"60s\")"
    ]


def test_surge_values(project):
    (msg,) = problems(project, MINIMAL + "  update_strategy:\n    max_surge: 150%\n")
    assert msg == ("cortex.yaml:7:16: api 'iris': update_strategy.max_surge: expected a percentage between "
                   "0% and 100%; found the string '150%'")
    (msg,) = problems(project, MINIMAL + "  update_strategy:\n    max_unavailable: lots\n")
    assert msg == ("cortex.yaml:7:22: api 'iris': update_strategy.max_unavailable: expected a number of "
                   "replicas such as 1, or a percentage of the desired replicas such as \"25%\"; "
                   "found the string 'lots'")
    (api,) = load(project, MINIMAL + "  update_strategy:\n    max_surge: '3'\n    max_unavailable: 0\n").apis
    assert (api.update_strategy.max_surge, api.update_strategy.max_unavailable) == (3, 0)


def test_a_percentage_is_parsed_once_and_resolved_like_kubernetes(project):
    (api,) = load(project, MINIMAL + "  update_strategy:\n    max_surge: 10%\n    max_unavailable: '40%'\n").apis
    u = api.update_strategy
    assert (u.max_surge, u.max_unavailable) == (units.Percent(10), units.Percent(40))
    # of 3 replicas: surge rounds up (0.3 -> 1), unavailable down (1.2 -> 1)
    assert rollout.resolve_update_strategy(u.max_surge, u.max_unavailable, 3) == (1, 1)
    assert rollout.plan("h", 3, [], u.max_surge, u.max_unavailable).start == 3
    # written back as cortex.yaml and Kubernetes write it (cortexd export kubernetes)
    assert (units.surge_as_written(u.max_surge), units.surge_as_written(u.max_unavailable)) == ("10%", "40%")


def test_cpu_null_means_no_limit_and_mem_in_bytes(project):
    (api,) = load(project, MINIMAL + "  compute:\n    cpu: null\n    mem: 500M\n").apis
    assert api.compute.cpu == 0.0 and api.compute.mem == 500_000_000


# -- YAML itself ---------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_mark(project):
    assert problems(project, "- name: a\n  kind: RealtimeAPI\n  predictor: {type: python\n") == [
        "cortex.yaml:4:1: invalid YAML: while parsing a flow mapping, expected ',' or '}', but got '<stream end>'"
    ]


def test_tabs_are_a_yaml_error(project):
    (msg,) = problems(project, "- name: a\n\tkind: RealtimeAPI\n")
    assert msg.startswith("cortex.yaml:2:1: invalid YAML:") and "\\t" in msg


def test_unsafe_tags_are_refused(project):
    (msg,) = problems(project, "- !!python/object/apply:os.system ['true']\n")
    assert msg.startswith("cortex.yaml:1:3: invalid YAML:") and "python/object/apply" in msg


def test_duplicate_keys_are_reported(project):
    assert problems(project, MINIMAL + "  name: again\n") == [
        "cortex.yaml:6:3: api 'again': name: duplicate key 'name' (first given on line 1); remove one of them"
    ]


def test_merge_keys_override_without_duplicate_warning(project):
    text = """\
- &base
  name: base
  kind: RealtimeAPI
  predictor: {type: python, path: predictor.py}
- <<: *base
  name: copy
"""
    assert [a.name for a in load(project, text).apis] == ["base", "copy"]


def test_a_single_mapping_is_accepted(project):
    (api,) = load(project, MINIMAL.replace("- name", "name").replace("\n  ", "\n")).apis
    assert api.name == "iris" and api.source_line == 1


def test_top_level_must_be_a_list_of_apis(project):
    assert problems(project, "just text\n") == [
        "cortex.yaml:1:1: expected a list of APIs (\"- name: my-api ...\"); found the string 'just text'"
    ]
    assert problems(project, "- 5\n") == [
        "cortex.yaml:1:3: expected an API (a mapping with name, kind, predictor...); found the integer 5"
    ]


def test_empty_file_defines_no_apis(project):
    (msg,) = problems(project, "# nothing yet\n")
    assert msg.startswith("cortex.yaml:1:1: no APIs defined")


def test_non_string_keys_are_refused(project):
    assert problems(project, MINIMAL + "    env:\n      1: x\n") == [
        "cortex.yaml:7:7: api 'iris': predictor.env.1: keys must be strings; found the integer 1 (quote it: \"1\")"
    ]


def test_alias_bombs_are_refused(project):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    (msg,) = problems(project, "\n".join(lines) + "\n")
    assert "too large" in msg


# -- units --------------------------------------------------------------------------


@pytest.mark.parametrize("value, cores", [("200m", 0.2), (1, 1.0), (0.5, 0.5), ("1", 1.0), ("2.5", 2.5),
                                          ("1500m", 1.5), (0, 0.0)])
def test_parse_cpu(value, cores):
    assert units.parse_cpu(value) == pytest.approx(cores)


@pytest.mark.parametrize("value", ["abc", "1c", "-1", -1, True, "200 m", [1]])
def test_parse_cpu_refuses_with_an_example(value):
    with pytest.raises(ValueError, match=r'expected a CPU quantity such as 1, 0.5 or "200m"'):
        units.parse_cpu(value)


@pytest.mark.parametrize("value, size", [("200Mi", 200 * 2**20), ("1Gi", 2**30), ("500M", 500_000_000),
                                         ("1G", 10**9), (1024, 1024), ("1024", 1024), ("1.5Gi", 3 * 2**29),
                                         ("64Ki", 65536), ("2k", 2000)])
def test_parse_memory(value, size):
    assert units.parse_memory(value) == size


def test_parse_memory_refuses_with_an_example():
    with pytest.raises(ValueError) as info:
        units.parse_memory("1GB")
    assert str(info.value) == ('expected a memory quantity such as "512Mi", "1Gi", "500M", "1G" or a number of '
                               "bytes; found the string '1GB' (unit 'GB' is not a Kubernetes quantity suffix: "
                               "use Ki/Mi/Gi or k/M/G)")
    for bad in ("lots", -5, 1.5, True, "1 Gi"):
        with pytest.raises(ValueError, match="expected a memory quantity"):
            units.parse_memory(bad)


@pytest.mark.parametrize("value, seconds", [("10s", 10), ("5m", 300), ("1h", 3600), ("1m30s", 90),
                                            ("100ms", 0.1), ("0", 0), ("0s", 0), ("1.5h", 5400),
                                            ("2h45m", 9900), ("500us", 0.0005)])
def test_parse_duration(value, seconds):
    assert units.parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["10", 10, "s", "10x", "1m 30s", "-5s", "", "10s5"])
def test_parse_duration_refuses_with_an_example(value):
    with pytest.raises(ValueError, match=r'expected a duration such as "10s", "5m", "1h", "1m30s" or "100ms"'):
        units.parse_duration(value)


@pytest.mark.parametrize("value, parsed", [(0, 0), (5, 5), ("5", 5), ("25%", units.Percent(25)),
                                           ("0%", units.Percent(0)), ("100%", units.Percent(100)),
                                           (units.Percent(5), units.Percent(5))])
def test_parse_surge(value, parsed):
    assert units.parse_surge(value) == parsed


@pytest.mark.parametrize("value", [-1, "101%", "x", "5.5", True, "-1%"])
def test_parse_surge_refuses(value):
    with pytest.raises(ValueError, match="expected a"):
        units.parse_surge(value)
