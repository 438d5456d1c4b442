"""Which build from source (or clone of a VCS requirement) failed in pip's output, and what
that build needed (pure).

pip stops on the first distribution it cannot build. Which one that was is easy to get wrong:
a metadata build fails while pip collects (spacy 2.1.9's sdist, whose build dependency
preshed 2.0.1 fails in a nested pip whose lines are indented), a wheel build fails after
everything is collected ("Failed building wheel for tokenizers"), and the last "Collecting"
line is often neither (issue 17: pip's answer blamed `preshed...`, not allennlp==0.9.* on line 1).
failed_builds() reads it the way pip writes it: pip's own lines start in column 0, a build's
steps are indented two spaces, and what a nested pip or a build says is indented further.
build_need() says what the build lacked, in words a user acts on (a C or Rust compiler, C
headers, a build that predates today's build tools). core/requirements.py (pip's answer to a
whole requirements.txt) and core/line_checks.py (each line checked alone) read builds here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

# pip's own lines (column 0) naming what it collects, with the "(from ...)" it came through
_TOP_ITEM = re.compile(r"^(?:Collecting|Processing) (?P<req>\S+)(?: \(from (?P<source>.*)\))?\s*$")
_NESTED_COLLECTING = re.compile(r"^\s{4,}Collecting (?P<req>\S+)")
_WHEEL_BUILD = re.compile(r"^\s{0,2}Building wheel for (?P<name>\S+) ")
_FAILED_WHEEL = re.compile(r"^\s{0,2}(?:ERROR: )?Failed building wheel for (?P<name>\S+)")
_NESTED_PIP = "pip subprocess to install build dependencies did not run successfully"

# "[Errno 2] No such file or directory: 'gcc'", "command 'gcc' failed: No such file or directory",
# "unable to execute 'gcc': No such file or directory" (setuptools' words across versions)
_MISSING_COMMAND = re.compile(r"(?:No such file or directory: '(?P<a>[^']+)'"
                              r"|command '(?P<b>[^']+)' failed: No such file"
                              r"|unable to execute '(?P<c>[^']+)': No such file)")
_COMPILER = re.compile(r"(gcc|g\+\+|clang|clang\+\+|cc|c\+\+)(-[\d.]+)?$")
_NO_RUST = re.compile(r"can't find Rust compiler|cargo: (?:command )?not found|No such file or directory: 'cargo'")
_CRATES_OFFLINE = re.compile(r"Could not resolve host: (?:index\.)?crates\.io|failed to get `\S+` as a dependency")
_NO_HEADER = re.compile(r"fatal error: (?P<header>[\w./+-]+\.h): No such file or directory")
_NO_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): (?P<what>.+)$", re.MULTILINE)
_ERROR = re.compile(r"^\s*(?:ERROR|error): (?P<what>.+)$")


def _name(requirement: str) -> str:
    try:
        return canonicalize_name(Requirement(requirement.split(";", 1)[0].strip()).name)
    except InvalidRequirement:
        return canonicalize_name(requirement)


@dataclass(frozen=True)
class FailedBuild:
    """One distribution whose build from source failed.

    requirement: as pip collected it ("spacy<2.2,>=2.1.0", "tokenizers==0.7.0", a path or URL);
    source: pip's "(from ...)" of it ("allennlp==0.9.*->-r /p/requirements.txt (line 1)"), None
    when pip did not say; lines: pip's lines about this build; needs: the build dependency whose
    own build failed in the nested pip ("preshed<2.1.0,>=2.0.1"), else None."""

    requirement: str
    source: str | None
    lines: tuple[str, ...]
    needs: str | None = None


def _items(output: Sequence[str]) -> list[tuple[int, str, str | None]]:
    """(index, requirement, source) of each distribution pip collected, from its own lines."""
    out = []
    for i, line in enumerate(output):
        m = _TOP_ITEM.match(line)
        if m and not (line.startswith("Processing ") and m.group("req").endswith(".whl")):
            out.append((i, m.group("req"), m.group("source")))
    return out


def _nested_need(lines: Sequence[str]) -> str | None:
    """The build dependency a nested pip was collecting when it failed."""
    if not any(_NESTED_PIP in line for line in lines):
        return None
    return next((m.group("req") for m in (_NESTED_COLLECTING.match(x) for x in reversed(lines)) if m), None)


def failed_builds(output: Sequence[str]) -> list[FailedBuild]:
    """The builds from source that failed, in pip's order: each "Failed building wheel for X"
    (pip builds every wheel before it gives up), else the one metadata build that stopped the
    collection: the last distribution pip started collecting before the first error."""
    items = _items(output)
    failed = [(i, m.group("name")) for i, m in ((i, _FAILED_WHEEL.match(x)) for i, x in enumerate(output)) if m]
    out = []
    for end, name in failed:
        own = _name(name)
        start = max((i for i in range(end) if (m := _WHEEL_BUILD.match(output[i])) and _name(m.group("name")) == own),
                    default=end)
        requirement, source = next(((r, s) for _, r, s in reversed(items) if _name(r) == own), (name, None))
        out.append(FailedBuild(requirement, source, tuple(output[start:end + 1])))
    if out:
        return out
    first_error = next((i for i, line in enumerate(output) if "did not run successfully" in line), None)
    if first_error is None:
        return []
    before = [item for item in items if item[0] < first_error]
    if not before:
        return []
    start, requirement, source = before[-1]
    end = next((i for i, _, _ in items if i > start), len(output))
    lines = tuple(output[start:end])
    if failed_clone(lines) is not None:
        return []  # a repository that could not be cloned: nothing was built
    return [FailedBuild(requirement, source, lines, _nested_need(lines))]


_CLONING = re.compile(r"^\s*Cloning (?P<url>\S+)")
_GIT_FATAL = re.compile(r"fatal: (?P<what>.+)$")
_CLONE_FAILED = re.compile(r"git clone .* did not run successfully|^\s*fatal: ")
_OFFLINE = re.compile(r"(Could not resolve host|Failed to connect|Connection timed out|Network is unreachable"
                      r"|Connection refused|Could not resolve proxy|unable to access)")
_NO_GIT = "Cannot find command 'git'"
VENDOR_IT = ("vendor the package into the project (a wheel or a folder named in requirements.txt) or install "
             "it from a reachable index")


@dataclass(frozen=True)
class FailedClone:
    """A VCS requirement whose repository pip could not clone: its URL, why (git's words,
    or that git is not installed), and whether the network is the cause (it may come back)."""

    url: str
    why: str
    offline: bool


def failed_clone(output: Sequence[str]) -> FailedClone | None:
    """The clone that failed, when pip's output is about one (`Cloning URL ...`, then git's
    `fatal:` or pip's "did not run successfully"); else None."""
    url = next((m.group("url") for m in (_CLONING.match(line) for line in output) if m), None)
    if url is None or not any(_CLONE_FAILED.search(line) or _NO_GIT in line for line in output):
        return None  # a clone that worked (a later build may have failed)
    if any(_NO_GIT in line for line in output):
        return FailedClone(url, "it needs git to clone the repository, and git is not installed", False)
    fatal = next((m.group("what").strip() for m in (_GIT_FATAL.search(line) for line in output) if m), "")
    if _OFFLINE.search(fatal):
        return FailedClone(url, f"the repository cannot be cloned: no network to it ({fatal})", True)
    return FailedClone(url, "the repository cannot be cloned" + (f" ({fatal})" if fatal else ""), False)


def build_need(lines: Sequence[str]) -> tuple[str, bool]:
    """What building from source needs that this host lacks, from a build's lines, and whether
    that is deterministic (crates.io out of reach is not)."""
    text = "\n".join(lines)
    if _NO_RUST.search(text):
        return "building it from source needs a Rust compiler (cargo), which is not installed", True
    if _CRATES_OFFLINE.search(text):
        return "building it from source needs Rust crates from crates.io, which cannot be reached", False
    for m in _MISSING_COMMAND.finditer(text):
        command = (m.group("a") or m.group("b") or m.group("c")).rsplit("/", 1)[-1]
        if _COMPILER.search(command):
            return f"building it from source needs a C compiler ({command}), which is not installed", True
    header_m = _NO_HEADER.search(text)
    if header_m:
        header = header_m.group("header")
        if header == "Python.h":
            return ("building it from source needs Python's C headers (Python.h; a python3-dev "
                    "package), which are not installed"), True
        return (f"building it from source needs the C header {header} (the -dev package of the "
                "library it wraps), which is not installed"), True
    module_m = _NO_MODULE.search(text)
    if module_m:
        what = re.sub(r" \(/[^)]*\)", "", module_m.group("what")).strip()  # not the build's temporary paths
        return f"building it from source fails ({what}: its build predates today's build tools)", True
    errors = [m.group("what") for m in (_ERROR.match(line) for line in lines) if m]
    last = next((e for e in reversed(errors) if "subprocess-exited-with-error" not in e
                 and not e.startswith(("Failed", "Could not build"))), "")
    return "building it from source fails" + (f" ({last.strip()})" if last else ""), True


def build_words(build: FailedBuild) -> tuple[str, bool]:
    """build_need() of a failed build, naming the build dependency whose own build failed:
    "building it from source needs preshed<2.1.0,>=2.0.1, whose own build fails (...)"."""
    need, deterministic = build_need(build.lines)
    if build.needs is None:
        return need, deterministic
    rest = need.removeprefix("building it from source ")
    return f"building it from source needs {build.needs}, whose own build {rest}", deterministic
