"""Why one requirements.txt line cannot be installed on this Python, from pip's words (pure).

When a project's install fails for good, backends/requirement_checks.py checks each line of its
requirements.txt alone, in a few steps, each one pip run:
1. a dry run from wheels only (`--only-binary :all:`): nothing is built and no project code runs;
   when it resolves, the line installs here;
2. a dry run that may use source distributions (their metadata is built, as pip would);
3. a wheel build of each source distribution the dry run chose (`pip wheel --no-deps`).
This module reads what those runs said (a LineRun) and decides, per line, whether it installs
and, when not, the cause in words a user acts on (`verdict`): the release has no build for
this Python (with its Requires-Python when pip says), a dependency of the line fails
("tokenizers==0.7.0, needed by transformers==2.9.*"), building from source needs a C compiler,
a Rust compiler or C headers, a VCS URL cannot be cloned (no network), the index cannot be
reached. one_pass_report() turns the verdicts into the DependencyError the API shows;
core/nearest_pins.py finds the nearest release that installs. No I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from cortexd.core.pip_builds import VENDOR_IT, build_words, failed_builds, failed_clone
from cortexd.core.requirements import RequirementLine, canonical

# -- what one pip run said ---------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One pip run of a check: ok (None: it did not finish in the time it had) and its output."""

    ok: bool | None
    output: tuple[str, ...] = ()


@dataclass(frozen=True)
class LineRun:
    """What pip said about one line checked alone (the steps that ran, in order)."""

    binary: Step | None = None  # dry run from wheels only
    full: Step | None = None  # dry run, source distributions allowed
    builds: tuple[tuple[str, Step], ...] = ()  # (requirement, its wheel build) per sdist chosen


@dataclass(frozen=True)
class Cause:
    """Why a line cannot be installed here.

    requirement: what failed (the line's own requirement, or a dependency of it: `dependency`);
    why: the reason, short (the nearest-pins notice says it), e.g. "0.21.3 has no build for
    Python 3.11"; more: what else the user should know (what building it needs); deterministic:
    the same line fails again (not the network)."""

    requirement: str
    why: str
    more: str = ""
    dependency: bool = False
    deterministic: bool = True
    no_build: bool = False  # the release has no wheel for this Python: a newer one may have


@dataclass(frozen=True)
class Verdict:
    """A line checked alone: installs (cause None and not undecided), or why not."""

    line: RequirementLine
    cause: Cause | None = None
    undecided: str = ""  # a check that did not finish: what it was doing

    @property
    def fails(self) -> bool:
        return self.cause is not None


INDEX_UNREACHABLE = "the package index cannot be reached"

# -- reading pip's words -----------------------------------------------------------------------

_NOT_FOUND = re.compile(
    r"Could not find a version that satisfies the requirement (?P<req>\S+)"
    r"(?: \(from (?!versions: )(?P<parent>[^)]*(?:\([^)]*\)[^)]*)*)\))?(?: \(from versions: (?P<versions>[^)]*)\))?")
_REQUIRES_PYTHON = re.compile(r"(?P<version>\S+) Requires-Python (?P<spec>[^;]+)")
_OTHER_PYTHON = "Ignored the following versions that require a different python version: "
_DEPENDS_ON = re.compile(r"^\s+(?P<parent>\S+) (?P<version>\S+) depends on (?P<dep>.+?)\s*$")
_ORIGIN_LINE = re.compile(r"-r (?P<file>\S+) \(line (?P<line>\d+)\)")
_NETWORK = re.compile(r"(Max retries exceeded|NewConnectionError|Temporary failure in name resolution"
                      r"|ConnectTimeoutError|ReadTimeoutError|ProxyError|SSLError)")
_INVALID = re.compile(r"Invalid requirement: (?P<req>.+?)\s*$", re.MULTILINE)
_ERROR = re.compile(r"^\s*(?:ERROR|error): (?P<what>.+)$")


def _text(output: Sequence[str]) -> str:
    return "\n".join(output)


def not_found(output: Sequence[str]) -> tuple[str, str | None, list[str] | None] | None:
    """pip's "Could not find a version that satisfies the requirement X (from P) (from versions:
    a, b)": (X, P or None, [a, b] or None: not said); None when pip did not say it."""
    for line in output:
        m = _NOT_FOUND.search(line)
        if m:
            versions = m.group("versions")
            listed = None if versions is None else [v for v in versions.split(", ") if v and v != "none"]
            return m.group("req"), m.group("parent"), listed
    return None


def requires_python(output: Sequence[str]) -> dict[str, str]:
    """{version: its Requires-Python} of the releases pip ignored for this interpreter."""
    out: dict[str, str] = {}
    for line in output:
        if _OTHER_PYTHON in line:
            for m in _REQUIRES_PYTHON.finditer(line.split(_OTHER_PYTHON, 1)[1]):
                out.setdefault(m.group("version"), m.group("spec").strip())
    return out


def conflicting_dependency(output: Sequence[str]) -> str | None:
    """The dependency a ResolutionImpossible is about, when every candidate of the line pins one
    that cannot be found ("transformers 2.9.1 depends on tokenizers==0.7.0"): its last pin."""
    deps = [m.group("dep") for m in (_DEPENDS_ON.match(line) for line in output) if m]
    if not deps or len({canonical(d) for d in deps}) != 1:
        return None
    return deps[0]


def wheel_versions(output: Sequence[str], name: str) -> list[str] | None:
    """The releases of `name` that have a wheel for this Python, from a wheels-only dry run that
    could not find the one asked for (pip lists the others); None when it did not say."""
    found = not_found(output)
    if found is None or canonical(found[0]) != canonical(name) or found[1] is not None:
        return None
    return found[2]


def index_versions(output: Sequence[str]) -> list[str]:
    """`pip index versions NAME` -> the releases it lists for this Python, newest first."""
    for line in output:
        if line.startswith("Available versions: "):
            return [v.strip() for v in line.split(": ", 1)[1].split(",") if v.strip()]
    return []


def builds_in_report(report: str) -> list[tuple[str, str]]:
    """pip's --report JSON -> (name, what to build) of each distribution it chose that is not a
    wheel (a source distribution: "name==version"; a VCS checkout or a folder: its URL)."""
    try:
        items = json.loads(report).get("install", [])
    except (ValueError, AttributeError):
        return []
    out = []
    for item in items:
        info = item.get("download_info") or {}
        meta = item.get("metadata") or {}
        url, name = info.get("url", ""), meta.get("name", "")
        if not url or url.split("#", 1)[0].endswith(".whl"):
            continue
        direct = item.get("is_direct") or "vcs_info" in info or "dir_info" in info
        out.append((name, url if direct else f"{name}=={meta.get('version', '')}"))
    return out


# -- the causes --------------------------------------------------------------------------------


def _pinned(requirement: str) -> str | None:
    """The version an exact pin names (`x==1.2`, `x===1.2`), else None."""
    try:
        spec = list(Requirement(requirement.split(";", 1)[0].strip()).specifier)
    except InvalidRequirement:
        return None
    if len(spec) == 1 and spec[0].operator in ("==", "===") and "*" not in spec[0].version:
        return spec[0].version
    return None


def _no_build(requirement: str, python: str, ignored: Mapping[str, str], built: bool = False) -> str:
    """Why no release `requirement` names installs here, as far as pip's words prove it: "0.21.3
    has no build for Python 3.11" when the release is known to exist (its Requires-Python was
    said, "(it requires Python >=3.6,<3.7)", or pip tried to build it from source), else "0.1 is
    not available for Python 3.11" (pip lists only the releases it can use: a release built for
    other Pythons only and a release that does not exist read the same)."""
    version = _pinned(requirement)
    needs = ignored.get(version) if version is not None else None
    exists = built or needs is not None
    if version is None:
        try:
            spec = str(Requirement(requirement.split(";", 1)[0].strip()).specifier)
        except InvalidRequirement:
            spec = ""
        words = f"no release matching {spec}" if spec else "no release of it"
        return f"{words} {'has a build' if exists else 'is available'} for Python {python}"
    if not exists:
        return f"{version} is not available for Python {python}"
    return f"{version} has no build for Python {python}" + (f" (it requires Python {needs})" if needs else "")


def cause_of(output: Sequence[str], requirement: str, python: str,
             said_before: Mapping[str, str] | None = None) -> Cause:
    """Why `requirement` could not be installed, from pip's output (a check of it alone, or the
    install of the whole requirements.txt that failed on it); said_before: the Requires-Python
    of releases an earlier step of the check saw ignored (pip says it only when it gives up)."""
    text = _text(output)
    clone = failed_clone(output)
    if clone is not None:  # not the Python: a repository out of reach, or no git
        return Cause(clone.url, clone.why, VENDOR_IT if clone.offline else "", deterministic=not clone.offline)
    ignored = {**(said_before or {}), **requires_python(output)}
    found = not_found(output)
    if _NETWORK.search(text):  # an index that did not answer: what the others listed proves nothing
        return Cause(requirement, INDEX_UNREACHABLE,
                     "check pip's index and proxy settings: `pip config list`, PIP_INDEX_URL, HTTPS_PROXY, "
                     "the project's pip.conf", deterministic=False)
    m = _INVALID.search(text)
    if m:
        return Cause(requirement, f"pip cannot read it ({m.group('req').strip()})")
    own = canonical(requirement)
    dependency = conflicting_dependency(output)
    if found is not None:
        missing, parent, versions = found
        dependency = missing if canonical(missing) != own or parent else dependency
        if dependency is None:
            if versions or ignored:  # releases for this Python exist, not this one
                return Cause(requirement, _no_build(requirement, python, ignored), no_build=True)
            return Cause(requirement, f"no release of it is available for Python {python} from the configured "
                         "indexes")
    if dependency is not None:
        return Cause(dependency, _no_build(dependency, python, ignored), dependency=True, no_build=True)
    builds = failed_builds(output)
    if builds:  # pip had no wheel of it for this Python, and building it failed
        build = builds[0]
        need, deterministic = build_words(build)
        own_build = canonical(build.requirement) == own  # pip may name it by its path or bare name
        failing = requirement if own_build else build.requirement
        return Cause(failing, _no_build(failing, python, ignored, built=True), need, dependency=not own_build,
                     deterministic=deterministic, no_build=True)
    if "ResolutionImpossible" in text:
        head = next((line.removeprefix("ERROR: ") for line in output if "Cannot install" in line), "")
        return Cause(requirement, "its dependencies conflict" + (f" ({head.strip()})" if head else ""))
    last = next((m.group("what") for m in (_ERROR.match(line) for line in reversed(output)) if m), "")
    return Cause(requirement, "pip could not install it" + (f" ({last.strip()})" if last else ""),
                 deterministic=False)


def verdict(line: RequirementLine, run: LineRun, python: str) -> Verdict:
    """Whether `line` installs here, from what its check's steps said (see the module docstring)."""
    if run.binary is not None and run.binary.ok:
        return Verdict(line)
    last = run.full or run.binary  # the wheels-only step alone: a candidate release's check
    if last is None or last.ok is None:
        return Verdict(line, undecided="the dry run did not finish")
    if last.ok is False:
        # the step with sources says why (a build that fails); the wheels-only step before it may
        # have said which releases require another Python
        said_before = requires_python(run.binary.output) if run.full is not None and run.binary else {}
        return Verdict(line, cause_of(last.output, line.text, python, said_before))
    for requirement, step in run.builds:
        if step.ok is None:
            return Verdict(line, undecided=f"building {requirement} from source did not finish")
        if step.ok is False:
            cause = cause_of(step.output, requirement, python)
            own = line.name is not None and canonical(requirement) == line.name
            return Verdict(line, Cause(requirement, cause.why, cause.more, dependency=line.name is not None and not own,
                                       deterministic=cause.deterministic, no_build=cause.no_build))
    return Verdict(line)


def known_failures(output: Sequence[str], lines: Sequence[RequirementLine], requirements_file: str,
                   python: str) -> dict[int, Verdict]:
    """The verdicts a failed install of the whole `requirements_file` already gave, by line: pip
    builds every source distribution before it gives up ("Failed to build psutil tokenizers"),
    and a metadata build that fails stops it (core/pip_builds.py), so each failed build is
    traced to the line pip says brought it in ("(from transformers==2.9.*->-r ... (line 2))"),
    its own or a dependency's, and that line need not be built again to be reported. A failure
    pip does not trace to a line of `requirements_file` is left to the checks."""
    by_number = {r.line: r for r in lines}
    out: dict[int, Verdict] = {}
    for build in failed_builds(output):
        origins = _ORIGIN_LINE.findall(build.source or "")
        if not origins or origins[-1][0] != requirements_file or int(origins[-1][1]) not in by_number:
            continue  # a local path, or a file requirements.txt includes: checked alone instead
        line = by_number[int(origins[-1][1])]
        need, deterministic = build_words(build)
        out.setdefault(line.line, Verdict(line, Cause(
            build.requirement, _no_build(build.requirement, python, {}, built=True), need,
            dependency=canonical(build.requirement) != line.name, deterministic=deterministic, no_build=True)))
    return out
