"""One API entry of a cortex.yaml on its way to an APISpec: its kind, its checks, its problems located.

spec.load reads a file into entries, each a plain dict with the marks of where its fields
were written (FieldMarks). Here each entry is dispatched on `kind` (RealtimeAPI; BatchAPI, whose
predictor, networking and compute are checked as a RealtimeAPI's; TrafficSplitter; the legacy `kind: api`,
translated into the RealtimeAPI shape by legacy.py; the legacy `kind: deployment`,
which names the endpoints of its file's legacy APIs), checked by spec.validate, and its
path-addressed findings become ConfigProblems with file:line:column, in the field names the
file uses (Entry.locate). No I/O but what check_api's filesystem rules read.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cortexd.errors import ConfigProblem
from cortexd.spec import units
from cortexd.spec.findings import Finding, FindingKind, Path_, format_path
from cortexd.spec.legacy import to_legacy, translate_legacy
from cortexd.spec.schema import apply_defaults, null_sections_left_out, schema_findings
from cortexd.spec.validate import CheckedAPI, check_api, check_splitter

VALID_KINDS = "RealtimeAPI, BatchAPI, TrafficSplitter, api (legacy), deployment (legacy)"
# The Cortex kinds cortexd does not serve, each with the Cortex release that introduced it: one
# entry per kind (a kind cortexd comes to serve leaves this table for VALID_KINDS and entries'
# dispatch). Read from Cortex's pkg/types/userconfig/kind.go at each tag.
NOT_SERVED_KINDS = {
    "TaskAPI": "0.27",
    "AsyncAPI": "0.31",
}
# names from Cortex's development before 0.19, renamed before that release shipped
RENAMED_KINDS = {"SyncAPI": "RealtimeAPI", "APISplitter": "TrafficSplitter"}
CORTEX_RELEASE = (0, 23)  # the release whose cortex.yaml cortexd serves


def not_served(kind: str) -> str:
    """Why a Cortex kind is refused, in one form for every kind: the release that introduced it."""
    if kind in RENAMED_KINDS:
        new = RENAMED_KINDS[kind]
        then = f"use kind: {new}" if new not in NOT_SERVED_KINDS else not_served(new)
        return f"{kind} is the name Cortex used for {new} before its 0.19 release: {then}"
    release = NOT_SERVED_KINDS[kind]
    later = (tuple(int(n) for n in release.split(".")) > CORTEX_RELEASE)
    when = f"Cortex {release}" + (", a later release than the 0.23 cortexd follows" if later else "")
    return f"{kind} (introduced in {when}) is not served by cortexd; it serves {VALID_KINDS}"


Pos = tuple[int, int]  # 1-based line, column


class FieldMarks(NamedTuple):
    """Where a field was written: its key (None for list items and merged keys) and its value
    (None where the parsed tree carries no mark for it)."""

    key: Pos | None
    value: Pos | None


Marks = dict[Path_, FieldMarks]  # path -> where its key and value were written


@dataclass
class Entry:
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
            path = to_legacy(path, self.legacy_paths)
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
        return ConfigProblem(self.file, line, column, self.name, path, finding.message, self.what)

    def notice(self, finding: Finding) -> str:
        (line, _), _ = self.locate(finding)
        return str(ConfigProblem(self.file, line, None, self.name, "", finding.message, self.what))

    @property
    def what(self) -> str:
        return {"TrafficSplitter": "traffic splitter", "BatchAPI": "batch api"}.get(self.kind, "api")


@dataclass
class FileResult:
    """What one file read into: its API entries, and the problems of the file as a whole."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)


def check_kinds(result: FileResult) -> str | None:
    """Refuse unknown kinds; return the legacy deployment name, if the file has one."""
    deployment: str | None = None
    first_deployment: Entry | None = None
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
        elif kind in NOT_SERVED_KINDS or kind in RENAMED_KINDS:
            entry.problems.append(entry.problem(Finding(("kind",), not_served(kind))))
        elif "kind" not in entry.doc:
            entry.problems.append(entry.problem(Finding(("kind",), f"missing required field; expected one of "
                                                        f"{VALID_KINDS}")))
        elif kind not in ("RealtimeAPI", "BatchAPI", "TrafficSplitter", "api"):
            entry.problems.append(entry.problem(Finding(("kind",), f"unknown kind; expected one of {VALID_KINDS}; "
                                                        f"found {units.describe_value(kind)}{_guess(kind)}")))
    return deployment


def _guess(kind: Any) -> str:
    """A near miss of a kind Cortex knew ("realtimeapi", "RealTimeAPI")."""
    if not isinstance(kind, str):
        return ""
    served = ("RealtimeAPI", "BatchAPI", "TrafficSplitter", "api", "deployment")
    known = {k.lower(): k for k in (*served, *NOT_SERVED_KINDS, *RENAMED_KINDS)}
    guess = difflib.get_close_matches(kind.lower(), list(known), n=1, cutoff=0.8)
    return f"; did you mean {known[guess[0]]!r}?" if guess else ""


def check_entries(result: FileResult, deployment: str | None, default_port: int | None) -> None:
    for entry in result.entries:
        if entry.problems:  # refused kind
            continue
        if entry.kind == "RealtimeAPI":
            doc = null_sections_left_out(entry.doc)
            entry.checked = check_api(doc, entry.project_dir, default_port=default_port)
        elif entry.kind == "BatchAPI":
            doc = null_sections_left_out(entry.doc, "batch_api")
            entry.checked = check_api(doc, entry.project_dir, default_port=default_port, kind="BatchAPI")
        elif entry.kind == "TrafficSplitter":
            entry.checked = check_splitter(entry.doc, entry.project_dir, default_port=default_port)
        elif entry.kind == "api":
            doc = null_sections_left_out(entry.doc, "legacy_api")
            findings = schema_findings(doc, "legacy_api")
            if not findings:
                translated, entry.legacy_paths, findings = translate_legacy(
                    apply_defaults(doc, "legacy_api"), deployment)
            if findings:
                entry.legacy_paths = None
                entry.problems += _merge(entry, findings)
                continue
            assert translated is not None  # translate_legacy returns a document when it finds no problem
            entry.checked = check_api(translated, entry.project_dir, legacy=True, default_port=default_port)
        else:
            entry.problems += _merge(entry, [])
            continue
        entry.problems += _merge(entry, entry.checked.findings)


def _merge(entry: Entry, findings: list[Finding]) -> list[ConfigProblem]:
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


def _float_text(value: float) -> str:
    if math.isnan(value):
        return ".nan (not a number)"
    return ".inf (infinity)" if value > 0 else "-.inf (minus infinity)"
