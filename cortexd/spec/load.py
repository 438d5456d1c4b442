"""Reading cortex.yaml files: YAML with line marks -> validated, defaulted APISpec values.

    load_config(paths) -> LoadedConfig        folders holding cortex.yaml, or yaml files
    load_documents(text, file, project_dir)   the same from text (tests)

This is the I/O edge of the configuration layer. It reads the files, parses them
with a safe loader that records the line/column of every key and value, and hands each
API entry, a plain dict with its marks, to spec/entries.py: dispatched on `kind`
(RealtimeAPI; the legacy `kind: api` / `kind: deployment`, translated by spec/legacy.py
into the RealtimeAPI shape), checked by spec.validate, its path-addressed findings turned
into ConfigProblems with file:line:column. Every problem of every file is collected and
raised as one ConfigError; nothing is returned unless the whole configuration is valid,
each API then an APISpec and each TrafficSplitter a SplitterSpec (spec/build.py). A
splitter's apis that the configuration does not define are left to the daemon, which checks
them against what it serves (daemon/projects.py); `LoadedConfig.outside_targets` names them.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import yaml

from cortexd.errors import ConfigError, ConfigProblem
from cortexd.spec import units
from cortexd.spec.build import build_spec, build_splitter
from cortexd.spec.entries import Entry, FieldMarks, FileResult, Marks, Pos, check_entries, check_kinds
from cortexd.spec.findings import Finding, Path_
from cortexd.spec.model import APISpec, SplitterSpec
from cortexd.spec.validate import cross_api_findings, splitter_target_findings

CONFIG_FILE_NAMES = ("cortex.yaml", "cortex.yml")
# Aliases can make a small file expand into a huge tree; refuse past this many values.
MAX_VALUES_PER_FILE = 200_000
# Deeper nesting than this is refused where it starts (the composer recurses per level).
MAX_NESTING = 100
# Integers longer than this are refused where they are written (no field takes one; Python
# refuses to convert integers of 4,300+ digits, and such values break JSON and float()).
MAX_INTEGER_DIGITS = 100
# Paths whose contents are free-form (handed to the predictor): non-finite floats allowed there.
FREE_FORM = (("predictor", "config"), ("predictor", "metadata"), ("metadata",))


@dataclass(frozen=True)
class LoadedConfig:
    apis: tuple[APISpec, ...]
    notices: tuple[str, ...]  # e.g. "cortex.yaml:4: api 'x': networking.api_gateway is ignored on one host"
    files: tuple[str, ...]  # absolute paths of the yaml files read (the watcher watches these)
    splitters: tuple[SplitterSpec, ...] = ()
    batch_apis: tuple[APISpec, ...] = ()  # kind: BatchAPI (validated; served apart: daemon/jobs.py)

    def outside_targets(self) -> list[tuple[SplitterSpec, str]]:
        """(splitter, api) for each splitter target this configuration does not define."""
        names = {a.name for a in self.apis}
        return [(s, t.name) for s in self.splitters for t in s.targets if t.name not in names]


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
            self.non_finite.append((path, value))  # entries._merge says what was expected there
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        self.findings.append(Finding(path, f"unsupported YAML value ({type(value).__name__}); "
                                     "use strings, numbers, booleans, lists and mappings"))
        return None


def _free_form(path: Path_) -> bool:
    return any(path[:len(prefix)] == prefix for prefix in FREE_FORM)


def _line_column(text: str, position: int) -> Pos:
    """1-based line and column of a character offset (yaml's ReaderError gives only the offset)."""
    position = max(0, min(position, len(text)))
    line = text.count("\n", 0, position) + 1
    return line, position - (text.rfind("\n", 0, position) + 1) + 1


# -- one file ------------------------------------------------------------------------


def _read_entries(text: str, file: str, project_dir: str) -> FileResult:
    result = FileResult()
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
        entry = Entry(file, project_dir, pos, doc, marks, kind if isinstance(kind, str) else "",
                      yaml_findings=plain.findings, non_finite=plain.non_finite)
        result.entries.append(entry)
    return result


def _read_text(text: str, file: str, project_dir: str, default_port: int | None = None) -> FileResult:
    result = _read_entries(text, file, project_dir)
    deployment = check_kinds(result)
    check_entries(result, deployment, default_port)
    return result


# -- the whole configuration --------------------------------------------------------


def _finish(results: Sequence[FileResult], problems: list[ConfigProblem], files: Sequence[str]) -> LoadedConfig:
    entries = [e for r in results for e in r.entries]
    problems = problems + [p for r in results for p in r.problems] + [p for e in entries for p in e.problems]
    checked = [(e, c) for e in entries if (c := e.checked) is not None]
    for i, finding in cross_api_findings([(e.where, c.doc) for e, c in checked]):
        problems.append(checked[i][0].problem(finding))
    for i, finding in splitter_target_findings([c.doc for _, c in checked], None):
        problems.append(checked[i][0].problem(finding))
    if problems:
        raise ConfigError(problems)
    notices = tuple(e.notice(f) for e, c in checked for f in _in_file_order(e, c.notices))
    apis = tuple(build_spec(c.doc, e.project_dir, e.file, e.pos[0]) for e, c in checked
                 if e.kind not in ("TrafficSplitter", "BatchAPI"))
    batch_apis = tuple(build_spec(c.doc, e.project_dir, e.file, e.pos[0]) for e, c in checked
                       if e.kind == "BatchAPI")
    splitters = tuple(build_splitter(c.doc, e.file, e.pos[0], _target_lines(e, len(c.doc["apis"])))
                      for e, c in checked if e.kind == "TrafficSplitter")
    return LoadedConfig(apis, notices, tuple(files), splitters, batch_apis)


def _target_lines(entry: Entry, n: int) -> list[int]:
    return [entry.locate(Finding(("apis", i, "name"), ""))[0][0] for i in range(n)]


def _in_file_order(entry: Entry, findings: list[Finding]) -> list[Finding]:
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
    results: list[FileResult] = []
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
