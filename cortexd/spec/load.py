"""Reading cortex.yaml files: YAML with line marks -> validated, defaulted APISpec values.

    load_config(paths) -> LoadedConfig        folders holding cortex.yaml, or yaml files
    load_documents(text, file, project_dir)   the same from text (tests, `cortexd validate`)

This is the I/O edge of the configuration layer. It reads the files, parses them
with a safe loader that records the line/column of every key and value, dispatches
each entry on `kind` (RealtimeAPI; the legacy `kind: api` / `kind: deployment`,
translated here into the RealtimeAPI shape), hands plain dicts to spec.validate,
and turns its path-addressed findings into ConfigProblems with file:line:column.
Every problem of every file is collected and raised as one ConfigError; nothing
is returned unless the whole configuration is valid.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, overload

import yaml

from cortexd.errors import ConfigError, ConfigProblem
from cortexd.spec import units
from cortexd.spec.findings import Finding, FindingKind, Path_, format_path
from cortexd.spec.model import (
    APISpec,
    AutoscalingSpec,
    BatchingSpec,
    ComputeSpec,
    ModelSpec,
    ModelsSpec,
    MonitoringSpec,
    NetworkingSpec,
    PredictorSpec,
    UpdateStrategySpec,
)
from cortexd.spec.schema import apply_defaults, schema_findings
from cortexd.spec.validate import CheckedAPI, check_api, cross_api_findings

CONFIG_FILE_NAMES = ("cortex.yaml", "cortex.yml")
VALID_KINDS = "RealtimeAPI, api (legacy), deployment (legacy)"
UNSUPPORTED_KINDS = {
    "BatchAPI": "BatchAPI is not supported by cortexd (single-host RealtimeAPI only)",
    "TrafficSplitter": "TrafficSplitter is not supported by cortexd (single-host RealtimeAPI only)",
    "APISplitter": "APISplitter is not supported by cortexd (single-host RealtimeAPI only)",
    "SyncAPI": "SyncAPI is not supported by cortexd: Cortex 0.19 renamed it; use kind: RealtimeAPI",
}
# Aliases can make a small file expand into a huge tree; refuse past this many values.
MAX_VALUES_PER_FILE = 200_000
# Deeper nesting than this is refused where it starts (the composer recurses per level).
MAX_NESTING = 100
# Integers longer than this are refused where they are written (no field takes one; Python
# refuses to convert integers of 4,300+ digits, and such values break JSON and float()).
MAX_INTEGER_DIGITS = 100
# Paths whose contents are free-form (handed to the predictor): non-finite floats allowed there.
FREE_FORM = (("predictor", "config"), ("predictor", "metadata"), ("metadata",))

Pos = tuple[int, int]  # 1-based line, column


class FieldMarks(NamedTuple):
    """Where a field was written: its key (None for list items and merged keys) and its value
    (None where the parsed tree carries no mark for it)."""

    key: Pos | None
    value: Pos | None


Marks = dict[Path_, FieldMarks]  # path -> where its key and value were written


@dataclass(frozen=True)
class LoadedConfig:
    apis: tuple[APISpec, ...]
    notices: tuple[str, ...]  # e.g. "cortex.yaml:4: api 'x': networking.api_gateway is ignored on one host"
    files: tuple[str, ...]  # absolute paths of the yaml files read (the watcher watches these)


# -- YAML with marks ----------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A mapping that remembers where each key and value was written."""

    key_marks: dict[Any, yaml.Mark | None]  # None: merged in from an anchor (`<<: *defaults`)
    value_marks: dict[Any, yaml.Mark]
    duplicates: list[tuple[Any, yaml.Mark]]  # (key, mark of its first occurrence)


class _Seq(list[Any]):
    item_marks: list[yaml.Mark]


class _TooDeep(yaml.MarkedYAMLError):
    pass


class _HugeInteger:
    """An integer too long to be any field's value (kept as its digit count, never converted)."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


class _MarkingLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences keep the marks of their keys and items.

    It also refuses what would make the parse itself fail without a location: nesting
    deeper than MAX_NESTING (RecursionError) and integers too long for int().
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise _TooDeep(None, None, f"nesting deeper than {MAX_NESTING} levels; a cortex.yaml "
                               "needs a few levels (flatten predictor.config)", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_map(loader: _MarkingLoader, node: yaml.MappingNode) -> _Map:
    explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # `<<: *anchor` merges come first, explicit keys last
    first_explicit = len(node.value) - explicit
    out = _Map()
    out.key_marks, out.value_marks, out.duplicates = {}, {}, []
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found a list or mapping used as a key", key_node.start_mark) from None
        first_mark = out.key_marks.get(key)
        if key in out and i >= first_explicit and first_mark is not None:
            out.duplicates.append((key, first_mark))
        out[key] = loader.construct_object(value_node, deep=True)
        # merged keys point at the anchor; only explicit ones count as duplicates
        out.key_marks[key] = key_node.start_mark if i >= first_explicit else None
        out.value_marks[key] = value_node.start_mark
    return out


def _construct_seq(loader: _MarkingLoader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.item_marks = [child.start_mark for child in node.value]
    return out


def _construct_int(loader: _MarkingLoader, node: yaml.ScalarNode) -> int | _HugeInteger:
    digits = sum(c.isalnum() for c in str(node.value))  # hex digits too: 0xfff... grows as fast
    if digits > MAX_INTEGER_DIGITS:
        return _HugeInteger(digits)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_timestamp(loader: _MarkingLoader, node: yaml.ScalarNode) -> Any:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):  # looks like a date, is none ("2020-13-45"): keep the text
        return str(node.value)


_MarkingLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_MarkingLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_MarkingLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_MarkingLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


@overload
def _pos(mark: yaml.Mark) -> Pos: ...
@overload
def _pos(mark: yaml.Mark | None) -> Pos | None: ...
def _pos(mark: yaml.Mark | None) -> Pos | None:
    return None if mark is None else (mark.line + 1, mark.column + 1)


def _parse_yaml(text: str) -> list[tuple[Any, yaml.Mark]]:
    """Every document of the stream with the mark of its root node; raises yaml.YAMLError."""
    loader = _MarkingLoader(text)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node() said a document follows
            docs.append((loader.construct_document(node), node.start_mark))
        return docs
    except (RecursionError, ValueError, OverflowError, TypeError) as e:
        # a value the YAML library could not construct: located where the reader stopped
        raise yaml.constructor.ConstructorError(
            None, None, f"a value could not be read ({type(e).__name__}: {str(e)[:200]})",
            loader.get_mark()) from None
    finally:
        loader.dispose()


class _TooLarge(Exception):
    pass


class _Plain:
    """Turns a marked tree into plain dicts/lists plus a path -> marks index."""

    def __init__(self) -> None:
        self.values = 0
        self.findings: list[Finding] = []
        self.non_finite: list[tuple[Path_, float]] = []  # .inf / .nan outside free-form mappings

    def convert(self, value: Any, path: Path_, marks: Marks) -> Any:
        self.values += 1
        if self.values > MAX_VALUES_PER_FILE:
            raise _TooLarge
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                part = key if isinstance(key, str) else repr(key)
                key_mark = getattr(value, "key_marks", {}).get(key)
                value_mark = getattr(value, "value_marks", {}).get(key)
                marks[path + (part,)] = FieldMarks(_pos(key_mark) or _pos(value_mark), _pos(value_mark))
                if isinstance(key, _HugeInteger):
                    self.findings.append(Finding(path + (part,), "keys must be strings; found an integer of "
                                                 f"{key.digits} digits", on_key=True))
                elif not isinstance(key, str):
                    self.findings.append(Finding(path + (part,), f"keys must be strings; found "
                                                 f"{units.describe_value(key)} (quote it: \"{key}\")", on_key=True))
                out[part] = self.convert(item, path + (part,), marks)
            for key, first in getattr(value, "duplicates", ()):
                part = key if isinstance(key, str) else repr(key)
                self.findings.append(Finding(path + (part,), f"duplicate key {key!r} (first given on line "
                                             f"{first.line + 1}); remove one of them", on_key=True))
            return out
        if isinstance(value, list):
            out_list = []
            for i, item in enumerate(value):
                item_marks = getattr(value, "item_marks", None)
                if item_marks is not None:
                    marks[path + (i,)] = FieldMarks(None, _pos(item_marks[i]))
                out_list.append(self.convert(item, path + (i,), marks))
            return out_list
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()  # YAML timestamps: keep them as the text the user meant
        if isinstance(value, _HugeInteger):
            self.findings.append(Finding(path, f"expected a number of at most {MAX_INTEGER_DIGITS} digits; "
                                         f"found an integer of {value.digits} digits"))
            return None
        if isinstance(value, float) and not math.isfinite(value) and not _free_form(path):
            self.non_finite.append((path, value))  # _merge says what was expected there
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        self.findings.append(Finding(path, f"unsupported YAML value ({type(value).__name__}); "
                                     "use strings, numbers, booleans, lists and mappings"))
        return None


def _free_form(path: Path_) -> bool:
    return any(path[:len(prefix)] == prefix for prefix in FREE_FORM)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return ".nan (not a number)"
    return ".inf (infinity)" if value > 0 else "-.inf (minus infinity)"


def _line_column(text: str, position: int) -> Pos:
    """1-based line and column of a character offset (yaml's ReaderError gives only the offset)."""
    position = max(0, min(position, len(text)))
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


# -- one file ------------------------------------------------------------------------


@dataclass
class _Entry:
    """One API entry of a file, on its way to an APISpec."""

    file: str
    project_dir: str
    pos: Pos
    doc: dict[str, Any]  # as written
    marks: Marks
    kind: str
    yaml_findings: list[Finding] = field(default_factory=list)  # duplicate keys, non-string keys...
    non_finite: list[tuple[Path_, float]] = field(default_factory=list)  # (path as written, value)
    legacy_paths: dict[Path_, Path_] | None = None  # RealtimeAPI path prefix -> legacy path prefix
    checked: CheckedAPI | None = None
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        return self.doc.get("name") if isinstance(self.doc.get("name"), str) else None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.pos[0]}"

    def locate(self, finding: Finding, *, as_written: bool = False) -> tuple[Pos, str]:
        """Position and printable field path of a finding (legacy field names for legacy entries;
        as_written: the finding's path already names the fields as the file does)."""
        path = finding.path
        if self.legacy_paths is not None and not as_written:
            path = _to_legacy(path, self.legacy_paths)
        for n in range(len(path), -1, -1):
            if path[:n] in self.marks:
                key_pos, value_pos = self.marks[path[:n]]
                if n == len(path):
                    pos = key_pos if finding.on_key and key_pos else value_pos
                else:  # the field is missing: point at the key of the mapping that lacks it
                    pos = key_pos or value_pos
                return pos or self.pos, format_path(path)
        return self.pos, format_path(path)

    def problem(self, finding: Finding, *, as_written: bool = False) -> ConfigProblem:
        (line, column), path = self.locate(finding, as_written=as_written)
        return ConfigProblem(self.file, line, column, self.name, path, finding.message)

    def notice(self, finding: Finding) -> str:
        (line, _), _ = self.locate(finding)
        return str(ConfigProblem(self.file, line, None, self.name, "", finding.message))


def _to_legacy(path: Path_, mapping: dict[Path_, Path_]) -> Path_:
    for n in range(len(path), 0, -1):
        if path[:n] in mapping:
            return mapping[path[:n]] + path[n:]
    return path


@dataclass
class _FileResult:
    entries: list[_Entry] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)


def _read_entries(text: str, file: str, project_dir: str) -> _FileResult:
    result = _FileResult()
    try:
        documents = _parse_yaml(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or "invalid YAML"
        if e.context:
            what = f"{e.context}, {what}"
        result.problems.append(ConfigProblem(file, mark.line + 1 if mark else None,
                                             mark.column + 1 if mark else None, None, "",
                                             f"invalid YAML: {what}"))
        return result
    except yaml.reader.ReaderError as e:  # a control character: located by offset only
        line, column = _line_column(text, e.position)
        what = (f"unacceptable character #x{e.character:04x}: control characters are not allowed"
                if isinstance(e.character, int) else e.reason)
        result.problems.append(ConfigProblem(file, line, column, None, "", f"invalid YAML: {what}"))
        return result
    except yaml.YAMLError as e:
        result.problems.append(ConfigProblem(file, 1, None, None, "", f"invalid YAML: {e}"))
        return result

    items: list[tuple[Any, Pos]] = []
    for data, mark in documents:
        if data is None:
            continue
        if isinstance(data, list):
            # a root `!!omap`/`!!pairs` is a plain list without item marks: its items get the document's
            item_marks = data.item_marks if isinstance(data, _Seq) else [mark] * len(data)
            items += [(item, _pos(m)) for item, m in zip(data, item_marks)]
        elif isinstance(data, dict):
            items.append((data, _pos(mark)))
        else:
            result.problems.append(ConfigProblem(
                file, mark.line + 1, mark.column + 1, None, "",
                f"expected a list of APIs (\"- name: my-api ...\"); found {units.describe_value(data)}"))
    if not items and not result.problems:
        result.problems.append(ConfigProblem(file, 1, 1, None, "", "no APIs defined; expected a list of APIs "
                                             "such as \"- name: my-api\\n  kind: RealtimeAPI\\n  predictor: ...\""))

    plain = _Plain()
    for item, pos in items:
        if not isinstance(item, dict):
            result.problems.append(ConfigProblem(
                file, pos[0], pos[1], None, "",
                f"expected an API (a mapping with name, kind, predictor...); found {units.describe_value(item)}"))
            continue
        marks: Marks = {(): FieldMarks(None, pos)}
        plain.findings, plain.non_finite = [], []
        try:
            doc = plain.convert(item, (), marks)
        except _TooLarge:
            result.problems.append(ConfigProblem(
                file, pos[0], pos[1], None, "",
                f"the file is too large (more than {MAX_VALUES_PER_FILE} values once aliases are expanded)"))
            return result
        kind = doc.get("kind")
        entry = _Entry(file, project_dir, pos, doc, marks, kind if isinstance(kind, str) else "",
                       yaml_findings=plain.findings, non_finite=plain.non_finite)
        result.entries.append(entry)
    return result


def _check_kinds(result: _FileResult) -> str | None:
    """Refuse unknown kinds; return the legacy deployment name, if the file has one."""
    deployment: str | None = None
    first_deployment: _Entry | None = None
    for entry in result.entries:
        kind = entry.doc.get("kind")
        if not isinstance(kind, str) and "kind" in entry.doc:
            entry.problems.append(entry.problem(Finding(("kind",), f"expected one of {VALID_KINDS}; found "
                                                        f"{units.describe_value(kind)}")))
        elif kind == "deployment":
            findings = schema_findings(entry.doc, "legacy_deployment")
            if first_deployment is not None:
                findings.append(Finding(("kind",), "only one kind: deployment entry is allowed per file "
                                        f"(the first is on line {first_deployment.pos[0]})"))
            first_deployment = first_deployment or entry
            entry.problems += [entry.problem(f) for f in findings]
            if not findings:
                deployment = entry.doc["name"]
        elif kind in UNSUPPORTED_KINDS:
            entry.problems.append(entry.problem(Finding(("kind",), UNSUPPORTED_KINDS[kind])))
        elif "kind" not in entry.doc:
            entry.problems.append(entry.problem(Finding(("kind",), f"missing required field; expected one of "
                                                        f"{VALID_KINDS}")))
        elif kind not in ("RealtimeAPI", "api"):
            entry.problems.append(entry.problem(Finding(("kind",), f"unknown kind; expected one of {VALID_KINDS}; "
                                                        f"found {units.describe_value(kind)}")))
    return deployment


def _translate_legacy(doc: dict[str, Any], deployment: str | None
                      ) -> tuple[dict[str, Any] | None, dict[Path_, Path_], list[Finding]]:
    """A legacy `kind: api` document (schema-valid, legacy defaults filled) in the RealtimeAPI shape.

    Returns the translated document, the map from RealtimeAPI field paths back to the
    legacy ones (so messages name the fields the user wrote), and translation problems.
    """
    pred0 = doc.get("predictor", {})
    findings = []
    if "python" in doc and "predictor" in doc:
        findings.append(Finding(("predictor",), "give the predictor either as python.predictor or as "
                                "predictor.path (Cortex 0.10-0.12), not both", on_key=True))
    if "python" not in doc and "predictor" not in doc:
        findings.append(Finding(("python",), "missing required field; expected python: {predictor: "
                                "<path to the predictor python file>} (or predictor: {path: ...})"))
    for key in ("python_path", "metadata"):
        if key in doc and key in pred0:
            findings.append(Finding(("predictor", key), f"{key} is given twice (at the top level and in "
                                    "predictor); keep one", on_key=True))
    if findings:
        return None, {}, findings

    paths: dict[Path_, Path_] = {("name",): ("name",), ("kind",): ("kind",)}
    predictor: dict[str, Any] = {"type": "python"}
    if "python" in doc:
        predictor["path"] = doc["python"]["predictor"]
        paths[("predictor", "path")] = ("python", "predictor")
    else:
        predictor["path"] = pred0["path"]
        paths[("predictor", "path")] = ("predictor", "path")
    if "model" in pred0:
        predictor["model_path"] = pred0["model"]
        paths[("predictor", "model_path")] = ("predictor", "model")
    for target, sources in (("python_path", (("python_path",), ("predictor", "python_path"))),
                            ("config", (("metadata",), ("predictor", "metadata")))):
        for source in sources:
            node: Any = doc
            for part in source:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                predictor[target] = node
                paths[("predictor", target)] = source
    paths[("predictor",)] = ("python",) if "python" in doc else ("predictor",)

    name = doc["name"]
    endpoint = doc.get("endpoint") or (f"/{deployment}/{name}" if deployment else f"/{name}")
    paths[("networking", "endpoint")] = ("endpoint",)
    compute = doc.get("compute", {})
    out: dict[str, Any] = {
        "name": name,
        "kind": "api",
        "predictor": predictor,
        "networking": {"endpoint": endpoint},
        "compute": {k: compute[k] for k in ("cpu", "gpu", "mem") if k in compute},
        "autoscaling": {k: compute[k] for k in ("min_replicas", "max_replicas", "init_replicas",
                                                 "target_cpu_utilization") if k in compute},
    }
    # legacy APIs scaled with a Kubernetes HPA on CPU, which scales up without a stabilization
    # period (its 5-minute downscale window is Cortex's default downscale period)
    out["autoscaling"]["upscale_stabilization_period"] = "0s"
    paths[("compute",)] = ("compute",)
    paths[("autoscaling",)] = ("compute",)
    if "tracker" in doc:
        out["monitoring"] = dict(doc["tracker"])
        paths[("monitoring",)] = ("tracker",)
    return out, paths, []


def _check_entries(result: _FileResult, deployment: str | None, default_port: int | None) -> None:
    for entry in result.entries:
        if entry.problems:  # refused kind
            continue
        if entry.kind == "RealtimeAPI":
            entry.checked = check_api(entry.doc, entry.project_dir, default_port=default_port)
        elif entry.kind == "api":
            findings = schema_findings(entry.doc, "legacy_api")
            if not findings:
                translated, entry.legacy_paths, findings = _translate_legacy(
                    apply_defaults(entry.doc, "legacy_api"), deployment)
            if findings:
                entry.legacy_paths = None
                entry.problems += _merge(entry, findings)
                continue
            assert translated is not None  # _translate_legacy returns a document when it finds no problem
            entry.checked = check_api(translated, entry.project_dir, legacy=True, default_port=default_port)
        else:
            entry.problems += _merge(entry, [])
            continue
        entry.problems += _merge(entry, entry.checked.findings)


def _merge(entry: _Entry, findings: list[Finding]) -> list[ConfigProblem]:
    """YAML-level findings first; a validation finding at the same place adds nothing.

    A non-finite number (.inf, .nan) is refused wherever it is written: where a field takes
    numbers, as "expected a finite number" (ahead of any bound it breaks); where it takes
    something else, the schema's type error (with its hint to quote) says more.
    """
    problems = [entry.problem(f) for f in entry.yaml_findings]
    mistyped: dict[str, str] = {}
    for f in findings:
        if f.kind is FindingKind.FORM:  # it says what the field takes and that a number was found
            mistyped.setdefault(entry.locate(f)[1], f.message)
    for path, value in entry.non_finite:
        message = mistyped.get(format_path(path), f"expected a finite number; found {_float_text(value)}")
        problems.append(entry.problem(Finding(path, message), as_written=True))  # one problem per place
    seen = {(p.line, p.path) for p in problems}
    for finding in findings:
        problem = entry.problem(finding)
        if (problem.line, problem.path) not in seen:
            problems.append(problem)
    return problems


def _read_text(text: str, file: str, project_dir: str, default_port: int | None = None) -> _FileResult:
    result = _read_entries(text, file, project_dir)
    deployment = _check_kinds(result)
    _check_entries(result, deployment, default_port)
    return result


# -- APISpec ----------------------------------------------------------------------------


def build_spec(doc: dict[str, Any], project_dir: str, source_file: str, source_line: int) -> APISpec:
    """The APISpec of a checked, completed document (units converted: seconds, cores, bytes)."""
    p = doc["predictor"]
    models = None
    if "models" in p:
        m = p["models"]
        models = ModelsSpec(
            paths=tuple(ModelSpec(e["name"], e["model_path"], e.get("signature_key")) for e in m.get("paths", ())),
            dir=m.get("dir"),
            signature_key=m.get("signature_key"),
            cache_size=m.get("cache_size"),
            disk_cache_size=m.get("disk_cache_size"),
        )
    batching = None
    if p.get("server_side_batching"):
        b = p["server_side_batching"]
        batching = BatchingSpec(int(b["max_batch_size"]), units.parse_duration(b["batch_interval"]))
    predictor = PredictorSpec(
        type=p["type"],
        path=p["path"],
        python_path=p["python_path"],
        model_path=p.get("model_path"),
        signature_key=p.get("signature_key"),
        models=models,
        server_side_batching=batching,
        processes_per_replica=int(p["processes_per_replica"]),
        threads_per_process=int(p["threads_per_process"]),
        config=copy.deepcopy(p.get("config", {})),
        image=p.get("image"),
        tensorflow_serving_image=p.get("tensorflow_serving_image"),
        env=dict(p.get("env", {})),
    )
    n, c, a, u = doc["networking"], doc["compute"], doc["autoscaling"], doc["update_strategy"]
    monitoring = doc.get("monitoring")
    return APISpec(
        name=doc["name"],
        kind="api" if doc["kind"] == "api" else "RealtimeAPI",
        predictor=predictor,
        networking=NetworkingSpec(n["endpoint"], int(n["local_port"]), n["api_gateway"]),
        compute=ComputeSpec(
            cpu=0.0 if c["cpu"] is None else units.parse_cpu(c["cpu"]),  # null: no CPU limit
            gpu=int(c["gpu"]),
            inf=int(c["inf"]),
            mem=None if c["mem"] is None else units.parse_memory(c["mem"]),
        ),
        autoscaling=AutoscalingSpec(
            min_replicas=int(a["min_replicas"]),
            max_replicas=int(a["max_replicas"]),
            init_replicas=int(a["init_replicas"]),
            target_replica_concurrency=float(a["target_replica_concurrency"]),
            max_replica_concurrency=int(a["max_replica_concurrency"]),
            window=units.parse_duration(a["window"]),
            downscale_stabilization_period=units.parse_duration(a["downscale_stabilization_period"]),
            upscale_stabilization_period=units.parse_duration(a["upscale_stabilization_period"]),
            max_downscale_factor=float(a["max_downscale_factor"]),
            max_upscale_factor=float(a["max_upscale_factor"]),
            downscale_tolerance=float(a["downscale_tolerance"]),
            upscale_tolerance=float(a["upscale_tolerance"]),
            target_cpu_utilization=a.get("target_cpu_utilization"),
        ),
        update_strategy=UpdateStrategySpec(units.parse_surge(u["max_surge"]), units.parse_surge(u["max_unavailable"])),
        monitoring=None if monitoring is None else MonitoringSpec(monitoring["model_type"], monitoring.get("key")),
        project_dir=project_dir,
        source_file=source_file,
        source_line=source_line,
        raw=doc,
    )


def _finish(results: Sequence[_FileResult], problems: list[ConfigProblem], files: Sequence[str]) -> LoadedConfig:
    entries = [e for r in results for e in r.entries]
    problems = problems + [p for r in results for p in r.problems] + [p for e in entries for p in e.problems]
    checked = [(e, c) for e in entries if (c := e.checked) is not None]
    for i, finding in cross_api_findings([(e.where, c.doc) for e, c in checked]):
        problems.append(checked[i][0].problem(finding))
    if problems:
        raise ConfigError(problems)
    notices = tuple(e.notice(f) for e, c in checked for f in _in_file_order(e, c.notices))
    apis = tuple(build_spec(c.doc, e.project_dir, e.file, e.pos[0]) for e, c in checked)
    return LoadedConfig(apis, notices, tuple(files))


def _in_file_order(entry: _Entry, findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: entry.locate(f)[0])


def load_documents(text: str, file: str, project_dir: str, *, default_port: int | None = None) -> LoadedConfig:
    """Validate the text of one cortex.yaml; `file` names it in messages, paths resolve from `project_dir`."""
    return _finish([_read_text(text, file, os.path.abspath(project_dir), default_port)], [], [file])


def _config_file(path: str) -> str | ConfigProblem:
    """The yaml file a path names (itself, or a folder's cortex.yaml), or why there is none."""
    if os.path.isdir(path):
        for name in CONFIG_FILE_NAMES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        return ConfigProblem(path, None, None, None, "", "no cortex.yaml (or cortex.yml) in this folder")
    if os.path.isfile(path):
        return path
    return ConfigProblem(path, None, None, None, "", "no such file or folder")


def load_config(paths: Sequence[str], *, default_port: int | None = None) -> LoadedConfig:
    """Load, validate and default every API of the given folders / yaml files; raises ConfigError.

    default_port: the local_port of every API that sets none (`cortexd up --port`; else 8888).
    """
    problems: list[ConfigProblem] = []
    results: list[_FileResult] = []
    files: list[str] = []
    for path in paths:
        file = _config_file(os.path.abspath(path))
        if isinstance(file, ConfigProblem):
            problems.append(file)
            continue
        if file in files:
            continue
        files.append(file)
        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError as e:
            problems.append(ConfigProblem(file, None, None, None, "", f"cannot read the file: {e.strerror}"))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            problems.append(ConfigProblem(file, line, column, None, "", f"cannot read the file: not UTF-8 "
                                          f"text ({e.reason} at byte {e.start})"))
            continue
        results.append(_read_text(text, file, os.path.dirname(file), default_port))
    if not paths:
        problems.append(ConfigProblem("<arguments>", None, None, None, "", "no configuration path given"))
    return _finish(results, problems, files)
