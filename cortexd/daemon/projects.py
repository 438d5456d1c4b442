"""The projects a daemon serves: one entry per deployed cortex.yaml, each loaded on its own.

`cortexd deploy PATH` adds or updates the APIs of PATH and leaves the other projects'
APIs serving, as Cortex does (an API removed from PATH's cortex.yaml is removed); a
broken save in one project keeps that project's last good version and never touches
the others. A project remembers the files its version shipped with (so files a
running predictor creates afterwards never roll it), and each API the files that made
its version (so a roll says which file triggered it).

load_project() reads files, and so do load_projects() and reload_projects() (each a
whole configuration load, which the daemon runs off its event loop, in a loader
process: running.py); the rest is pure.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cortexd.daemon.watcher import (
    api_digest,
    api_files,
    changed_files,
    cortexignore_warning,
    describe_change,
    project_files,
)
from cortexd.errors import ConfigError, ConfigProblem
from cortexd.spec import APISpec, load_config
from cortexd.spec.findings import FindingKind, format_path
from cortexd.spec.model import SplitterSpec
from cortexd.spec.validate import cross_api_findings, splitter_target_findings


@dataclass(frozen=True)
class Project:
    path: str  # as deployed (absolute): a folder holding a cortex.yaml, or a yaml file
    files: tuple[str, ...]  # the configuration files read
    specs: tuple[APISpec, ...]  # project digests folded into their spec hashes
    notices: tuple[str, ...]
    shipped: frozenset[str] = frozenset()  # the project's files when it was deployed
    api_files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # api -> {path: digest}
    cpu_only: bool = False  # its GPU APIs served on the CPU (`--cpu-only`), kept across reloads
    nearest_pins: bool = False  # deployed with nearest pins (each spec says so too)
    splitters: tuple[SplitterSpec, ...] = ()  # its TrafficSplitters (no files, no replicas)
    batch_apis: tuple[APISpec, ...] = ()  # its BatchAPIs (no replicas: workers per job, daemon/jobs.py)

    @property
    def names(self) -> list[str]:
        """Its APIs', BatchAPIs' and traffic splitters' names."""
        return [s.name for s in (*self.specs, *self.batch_apis)] + [s.name for s in self.splitters]

    def hashes(self) -> dict[str, str]:
        """name -> spec hash, of its APIs, BatchAPIs and traffic splitters."""
        out = {s.name: s.spec_hash for s in (*self.specs, *self.batch_apis)}
        out.update((s.name, s.spec_hash) for s in self.splitters)
        return out


def model_locations(specs: Sequence[APISpec]) -> set[str]:
    """Local model folders and files of the specs (the runtime polls them: they never roll)."""
    out: set[str] = set()
    for spec in specs:
        p = spec.predictor
        locations = [p.model_path] + ([p.models.dir] + [m.path for m in p.models.paths] if p.models else [])
        out |= {os.path.normpath(loc) for loc in locations if loc and not loc.startswith("s3://")}
    return out


def load_project(path: str, *, shipped: frozenset[str] | None = None,
                 default_port: int | None = None, cpu_only: bool = False,
                 nearest_pins: bool = False) -> Project:
    """Load and validate one project, folding into each API's spec hash the digest of the files
    that make its version and the modes (raises ConfigError). `shipped`: the files the running
    version shipped with (None: a deploy, which ships whatever is there now); cpu_only: its APIs
    that request compute.gpu are served on the CPU (`--cpu-only`: APISpec.cpu_only, a version of
    their own); nearest_pins: the nearest release that installs here of each pin that does not."""
    loaded = load_config([path], default_port=default_port)
    configs = {os.path.realpath(f) for f in loaded.files} | set(loaded.files)
    models = model_locations(loaded.apis)
    files_by_dir: dict[str, dict[str, str]] = {}
    notices = list(loaded.notices)
    for folder in sorted({s.project_dir for s in loaded.apis}):
        files_by_dir[folder] = project_files(folder, shipped=shipped, model_dirs=models)
        warning = cortexignore_warning(folder)  # said as a warning event, the project still loads
        if warning is not None:
            notices.append(warning)
    if shipped is None:
        shipped = frozenset(p for files in files_by_dir.values() for p in files)
    specs, per_api = [], {}
    for spec in loaded.apis:
        others = {o.predictor.path for o in loaded.apis
                  if o.project_dir == spec.project_dir and o.predictor.path != spec.predictor.path}
        exclude = others | configs  # what a config says about an API is in its spec already
        per_api[spec.name] = api_files(files_by_dir[spec.project_dir], exclude)
        digest = api_digest(files_by_dir[spec.project_dir], exclude)
        # a new spec: its hash includes the digest and the modes
        specs.append(replace(spec, project_digest=digest, cpu_only=cpu_only and spec.compute.gpu > 0,
                             nearest_pins=nearest_pins))
    return Project(path, tuple(loaded.files), tuple(specs), tuple(notices), shipped, per_api,
                   cpu_only=cpu_only, nearest_pins=nearest_pins, splitters=loaded.splitters,
                   batch_apis=loaded.batch_apis)


def conflicts(projects: Sequence[Project], settled: Collection[tuple[str, str]] = (), *,
              missing_targets: bool = True) -> list[ConfigProblem]:
    """Names and routes used twice across projects (each project was checked on its own), and
    traffic splitters whose apis are splitters, or not deployed (unless `missing_targets` is False:
    `projects` are not all that is deployed). `settled`: (name, spec hash) of splitters deployed
    before, whose apis may have gone since (their shares go to the others)."""
    entries: list[APISpec | SplitterSpec] = [s for p in projects for s in (*p.specs, *p.batch_apis)]
    entries += [s for p in projects for s in p.splitters]
    docs = [e.raw for e in entries]
    found = cross_api_findings([(f"{e.source_file}:{e.source_line}", e.raw) for e in entries])
    apis = {s.name for p in projects for s in p.specs}
    found += [(i, f) for i, f in splitter_target_findings(docs, apis)
              if f.kind is not FindingKind.MISSING_TARGET
              or (missing_targets and (entries[i].name, entries[i].spec_hash) not in settled)]
    problems = []
    for i, f in found:
        entry, line = entries[i], entries[i].source_line
        if isinstance(entry, SplitterSpec) and f.path[:1] == ("apis",) and len(f.path) > 1:
            line = entry.targets[int(f.path[1])].line or line
        what = "traffic splitter" if isinstance(entry, SplitterSpec) else \
            "batch api" if entry.kind == "BatchAPI" else "api"
        problems.append(ConfigProblem(entry.source_file, line, None, entry.name, format_path(f.path), f.message, what))
    return problems


def merged(current: Sequence[Project], incoming: Sequence[Project]) -> list[Project]:
    """The projects after deploying `incoming`: a project deployed again (same configuration
    file) is replaced in place, new ones come last, the others stay."""
    by_file = {f: p for p in incoming for f in p.files}
    out, placed = [], set()
    for project in current:
        replacement = next((by_file[f] for f in project.files if f in by_file), None)
        if replacement is None:
            out.append(project)
        elif replacement.path not in placed:
            out.append(replacement)
            placed.add(replacement.path)
    out += [p for p in incoming if p.path not in placed]
    return out


def roll_reasons(before: Sequence[Project], after: Sequence[Project]) -> dict[str, str]:
    """For each API whose version changes: which files did it ("predictor.py changed")."""
    old = {s.name: (s, p) for p in before for s in p.specs}
    reasons = {}
    for project in after:
        for spec in project.specs:
            if spec.name not in old or old[spec.name][0].spec_hash == spec.spec_hash:
                continue
            prev_spec, prev_project = old[spec.name]
            config = (os.path.basename(spec.source_file)
                      if prev_spec.raw != spec.raw else None)
            files = changed_files(prev_project.api_files.get(spec.name, {}),
                                  project.api_files.get(spec.name, {}), spec.project_dir)
            if files or config or prev_spec.nearest_pins == spec.nearest_pins:
                reasons[spec.name] = describe_change(files, config)
            else:
                reasons[spec.name] = f"nearest pins turned {'on' if spec.nearest_pins else 'off'}"
    return reasons


@dataclass(frozen=True)
class DeploySummary:
    created: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: list[str]  # deployed again, the same version
    left_alone: list[str]  # other projects' APIs, still serving
    kinds: dict[str, str] = field(default_factory=dict)  # what each name is, when not a RealtimeAPI

    def to_json(self) -> dict:
        return {"created": self.created, "updated": self.updated, "removed": self.removed,
                "unchanged": self.unchanged, "left_alone": self.left_alone, "kinds": self.kinds}


def deploy_summary(before: Sequence[Project], after: Sequence[Project], incoming: Sequence[Project],
                   deleted: Collection[str] = ()) -> DeploySummary:
    old = {n: h for p in before for n, h in p.hashes().items() if n not in deleted}
    new_names = [n for p in incoming for n in p.names]
    incoming_files = {f for p in incoming for f in p.files}
    from_incoming_before = {n for p in before if set(p.files) & incoming_files for n in p.names}
    new_hash = {n: h for p in incoming for n, h in p.hashes().items()}
    return DeploySummary(
        created=[n for n in new_names if n not in old],
        updated=[n for n in new_names if n in old and old[n] != new_hash[n]],
        removed=sorted(n for n in from_incoming_before if n not in new_hash and n in old),
        unchanged=[n for n in new_names if n in old and old[n] == new_hash[n]],
        left_alone=sorted(n for p in after if all(p is not q for q in incoming)
                          for n in p.names if n not in deleted),
        kinds={**{s.name: "batch api" for p in (*before, *after) for s in p.batch_apis},
               **{s.name: "traffic splitter" for p in (*before, *after) for s in p.splitters}},
    )


def die_with(parent: int) -> None:
    """Initializer of the daemon's loader process: it ends when the daemon does, even by SIGKILL
    (PR_SET_PDEATHSIG, Linux), instead of lingering as an orphan; and, like the daemon, it is not
    dumpable (PR_SET_DUMPABLE 0: it holds the daemon's environment, which processes of the same
    uid, replicas among them, must not read in /proc: daemon/process_guard.py)."""
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
            prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
            prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)  # the daemon died before prctl


def load_projects(paths: Sequence[str], default_port: int | None = None, cpu_only: bool = False,
                  nearest_pins: bool = False, whole: bool = True) -> list[Project]:
    """Each path loaded as its own project (blocking: run it in a thread); all problems of all
    of them, and names or routes used twice across them, raised as one ConfigError.
    nearest_pins: the projects install the nearest releases of pins that do not install here.
    `whole`: they are all that will be deployed (`up`), so a splitter's apis must be among them;
    a deploy checks that against the merged set instead."""
    projects: list[Project] = []
    problems = []
    for path in paths:
        try:
            project = load_project(path, default_port=default_port, cpu_only=cpu_only,
                                   nearest_pins=nearest_pins)
        except ConfigError as e:
            problems += e.problems
            continue
        if not any(set(project.files) & set(p.files) for p in projects):  # `up A A`
            projects.append(project)
    problems += conflicts(projects, missing_targets=whole)
    if problems:
        raise ConfigError(problems)
    return projects


def settled_splitters(projects: Sequence[Project]) -> set[tuple[str, str]]:
    """(name, spec hash) of the projects' traffic splitters: see conflicts()."""
    return {(s.name, s.spec_hash) for p in projects for s in p.splitters}


def reload_projects(projects: Sequence[Project], default_port: int | None = None
                    ) -> tuple[list[Project], list]:
    """Every project loaded again with the files its version shipped with (blocking); a project
    that fails keeps its last good version. Returns (projects, problems)."""
    out, problems = [], []
    for project in projects:
        try:
            out.append(load_project(project.path, shipped=project.shipped, default_port=default_port,
                                    cpu_only=project.cpu_only, nearest_pins=project.nearest_pins))
        except ConfigError as e:
            out.append(project)
            problems += e.problems
    clashes = conflicts(out, settled_splitters(projects))
    if clashes:
        return list(projects), problems + clashes
    return out, problems
