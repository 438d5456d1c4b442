"""Hostile values in cortex.yaml: each is a located ConfigError, never a crash (issue 9, items 11-12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexd.errors import ConfigError
from cortexd.spec import units
from cortexd.spec.load import load_config, load_documents
from tests.builders import config_problems as problems

HEAD = """\
- name: iris
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    pass\n")
    return tmp_path




@pytest.mark.parametrize("section, field, written, shown", [
    ("autoscaling", "max_upscale_factor", ".inf", ".inf (infinity)"),
    ("autoscaling", "max_downscale_factor", "-.inf", "-.inf (minus infinity)"),
    ("autoscaling", "target_replica_concurrency", ".nan", ".nan (not a number)"),
    ("autoscaling", "upscale_tolerance", ".inf", ".inf (infinity)"),
    ("autoscaling", "downscale_tolerance", ".NaN", ".nan (not a number)"),
])
def test_non_finite_numbers_are_refused_in_every_numeric_field(project, section, field, written, shown):
    assert problems(project, HEAD + f"  {section}:\n    {field}: {written}\n") == [
        f"cortex.yaml:7:{len(field) + 7}: api 'iris': {section}.{field}: expected a finite number; found {shown}"]


def test_a_non_finite_integer_is_one_type_error(project):
    assert problems(project, HEAD + "  autoscaling:\n    min_replicas: 1.0e+400\n") == [
        "cortex.yaml:7:19: api 'iris': autoscaling.min_replicas: expected an integer; found the number inf"]


def test_a_non_finite_cpu_says_what_a_cpu_quantity_is(project):
    assert problems(project, HEAD + "  compute:\n    cpu: .nan\n") == [
        ("cortex.yaml:7:10: api 'iris': compute.cpu: expected a CPU quantity such as 1, 0.5 or \"200m\" (200 "
        "millicores = 0.2 cores); found the number nan (a finite number is needed)")]


def test_a_non_finite_number_where_text_is_expected_is_a_type_error(project):
    [problem] = problems(project, HEAD + "    env:\n      LEVEL: .inf\n")
    assert problem == ("cortex.yaml:7:14: api 'iris': predictor.env.LEVEL: expected a string; found the number inf "
                       "(quote it: \"inf\")")


def test_legacy_fields_refuse_non_finite_numbers_too(project):
    text = "- kind: api\n  name: legacy\n  python:\n    predictor: predictor.py\n  compute:\n    cpu: .inf\n"
    [problem] = problems(project, text)
    assert problem.startswith("cortex.yaml:6:10: api 'legacy': compute.cpu: ") and "finite" in problem


def test_non_finite_numbers_in_several_fields_are_reported_together(project):
    text = HEAD + "  compute:\n    cpu: .nan\n  autoscaling:\n    max_upscale_factor: .inf\n"
    assert [p.split(": ", 3)[2] for p in problems(project, text)] == ["compute.cpu", "autoscaling.max_upscale_factor"]


def test_predictor_config_may_hold_any_float(project):
    loaded = load_documents(HEAD + "    config:\n      threshold: .inf\n", "cortex.yaml", str(project))
    assert loaded.apis[0].predictor.config == {"threshold": float("inf")}


def test_deep_nesting_is_refused_where_it_starts(project):
    text = HEAD + "    config: " + "[" * 600 + "]" * 600 + "\n"
    [problem] = problems(project, text)
    assert problem.startswith("cortex.yaml:6:")
    assert "nesting deeper than 100 levels" in problem


def test_deep_block_nesting_is_refused_too(project):
    text = HEAD + "    config:\n" + "".join("  " * (i + 3) + f"k{i}:\n" for i in range(600))
    [problem] = problems(project, text)
    assert problem.startswith("cortex.yaml:10") and "nesting deeper than 100 levels" in problem


def test_an_integer_of_thousands_of_digits_is_refused_at_its_line(project):
    text = HEAD + "  autoscaling:\n    min_replicas: " + "9" * 5000 + "\n"
    assert problems(project, text) == [
        ("cortex.yaml:7:19: api 'iris': autoscaling.min_replicas: expected a number of at most 100 digits; "
         "found an integer of 5000 digits")]


def test_a_hex_integer_of_thousands_of_digits_is_refused_too(project):
    text = HEAD + "    config:\n      x: 0x" + "f" * 5000 + "\n"
    [problem] = problems(project, text)
    assert problem.startswith("cortex.yaml:7:10: api 'iris': predictor.config.x: expected a number of at most")


def test_huge_memory_quantity(project):
    [problem] = problems(project, HEAD + '  compute:\n    mem: "1' + "0" * 400 + 'Ei"\n')
    assert problem.startswith("cortex.yaml:7:10: api 'iris': compute.mem: expected a memory quantity of at "
                              "most 8Ei")


def test_huge_memory_in_bytes(project):
    [problem] = problems(project, HEAD + "  compute:\n    mem: 1" + "0" * 40 + "\n")
    assert "at most 8Ei" in problem and "found an integer of 41 digits" in problem


def test_huge_cpu_quantity(project):
    [problem] = problems(project, HEAD + '  compute:\n    cpu: "9' + "9" * 400 + 'm"\n')
    assert problem.startswith("cortex.yaml:7:10: api 'iris': compute.cpu: expected a CPU quantity of at most")


def test_huge_duration(project):
    [problem] = problems(project, HEAD + '  autoscaling:\n    window: "9' + "9" * 400 + '0s"\n')
    assert problem.startswith("cortex.yaml:7:13: api 'iris': autoscaling.window: expected a duration of at "
                              "most 2562047h (Go's time.Duration limit)")


def test_huge_target_replica_concurrency(project):
    [problem] = problems(project, HEAD + "  autoscaling:\n    target_replica_concurrency: 1" + "0" * 400 + "\n")
    assert problem.startswith("cortex.yaml:7:33: api 'iris': autoscaling.target_replica_concurrency: expected")
    [problem] = problems(project, HEAD + "  autoscaling:\n    target_replica_concurrency: 1" + "0" * 40 + "\n")
    assert problem == ("cortex.yaml:7:33: api 'iris': autoscaling.target_replica_concurrency: expected a value "
                       "<= 2147483647 (an int32, as Kubernetes has it); found an integer of 41 digits")


@pytest.mark.parametrize("field", ["min_replicas", "max_replicas", "init_replicas"])
def test_replica_counts_are_bounded_for_one_host(project, field):
    text = HEAD + f"  autoscaling:\n    {field}: 1001\n    max_replicas: 1000\n".replace(
        "    max_replicas: 1001\n    max_replicas: 1000\n", "    max_replicas: 1001\n")
    assert f"api 'iris': autoscaling.{field}: expected a value <= 1000 (a sane bound for one host); found 1001" \
        in "\n".join(problems(project, text))


@pytest.mark.parametrize("section, field", [("predictor", "threads_per_process"), ("compute", "gpu"),
                                            ("compute", "inf")])
def test_counts_are_int32(project, section, field):
    text = (HEAD.replace("    path: predictor.py\n", f"    path: predictor.py\n    {field}: 2147483648\n")
            if section == "predictor" else HEAD + f"  {section}:\n    {field}: 2147483648\n")
    assert any(f"{section}.{field}: expected a value <= 2147483647 (an int32" in p for p in problems(project, text))


def test_huge_surge_counts(project):
    [problem] = problems(project, HEAD + "  update_strategy:\n    max_surge: '" + "9" * 5000 + "'\n")
    assert problem.startswith("cortex.yaml:7:16: api 'iris': update_strategy.max_surge: expected at most "
                              "2147483647 replicas")
    [problem] = problems(project, HEAD + "  update_strategy:\n    max_unavailable: '" + "9" * 5000 + "%'\n")
    assert "expected a percentage between 0% and 100%" in problem


def test_control_characters_are_located_by_line_and_column(project):
    assert problems(project, HEAD + "  compute:\n    cpu: \x07\n") == [
        "cortex.yaml:7:10: invalid YAML: unacceptable character #x0007: control characters are not allowed"]


def test_bytes_that_are_not_utf8_are_located(tmp_path):
    (tmp_path / "cortex.yaml").write_bytes(HEAD.encode() + b"  compute:\n    cpu: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config([str(tmp_path)])
    [problem] = info.value.problems
    assert (problem.line, problem.column) == (7, 10) and "not UTF-8" in problem.message


def test_something_that_looks_like_a_date_but_is_none_is_kept_as_text(project):
    loaded = load_documents(HEAD + "    config:\n      when: 2020-13-45\n", "cortex.yaml", str(project))
    assert loaded.apis[0].predictor.config == {"when": "2020-13-45"}


def test_units_refuse_non_finite_and_huge_values_themselves():
    for parse, value in [(units.parse_cpu, float("nan")), (units.parse_cpu, float("inf")),
                         (units.parse_memory, "9" * 400 + "Ei"), (units.parse_duration, "9" * 400 + "h"),
                         (units.parse_surge, 2**31)]:
        with pytest.raises(ValueError):
            parse(value)
    assert units.parse_duration("2562047h") == 2562047 * 3600


def test_a_key_of_thousands_of_digits_is_refused_at_its_line(project):
    [problem] = problems(project, HEAD + "    config:\n      ? " + "9" * 5000 + "\n      : 1\n")
    assert problem.startswith("cortex.yaml:7:9: api 'iris': predictor.config.")
    assert problem.endswith("keys must be strings; found an integer of 5000 digits")


@pytest.mark.parametrize("tag", ["!!omap", "!!pairs"])
def test_a_document_that_is_an_ordered_map_is_refused_as_not_a_list_of_apis(project, tag):
    # its root is a plain list of (key, value) pairs, without the item marks of a YAML list
    assert problems(project, f"--- {tag}\n- name: iris\n- kind: RealtimeAPI\n") == [
        "cortex.yaml:1:5: expected an API (a mapping with name, kind, predictor...); found a tuple"] * 2
