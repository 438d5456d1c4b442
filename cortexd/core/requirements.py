"""A project's requirements and pip's answers to them, in words a user acts on.

What the backends need decided about installing a project's dependencies (the process
backend's environment_plan.py and environment_build.py; image_plans.py and images.py for
the Docker images), as pure functions of text:
- requirement_lines(): requirements.txt -> the requirements with their line numbers;
- environment_digest(): the key of a cached environment (same inputs, same environment);
- pip_activity(): pip's `Collecting X (from -r requirements.txt (line N))` lines ->
  "six==1.16.0 (requirements.txt line 2)", for `get` while the install runs;
- install_failure(): pip's output of a failed install -> which requirement failed,
  on which line, and why, e.g. "scikit-learn==0.21.3 (requirements.txt line 2) cannot
  be installed on Python 3.11: ..." followed by pip's last lines.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from cortexd.core.pip_builds import build_words, failed_builds, failed_clone

PREINSTALLED_FILE = "cortex-preinstalled.txt"  # the added packages, as a requirements file


@dataclass(frozen=True)
class RequirementLine:
    line: int  # 1-based, the first physical line of a continued requirement
    text: str  # as written, comments and continuations removed
    name: str | None  # canonical distribution name; None for options, paths and URLs


def requirement_lines(text: str) -> list[RequirementLine]:
    """The requirements of a requirements.txt, each with its line number and name."""
    out: list[RequirementLine] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if not line:
            continue
        out.append(RequirementLine(start, line, _name_of(line)))
    return out


def _name_of(line: str) -> str | None:
    if line.startswith("-"):
        return None  # -r, -c, -e, --index-url ...: options, not requirements
    try:
        return canonicalize_name(Requirement(line.split(" --", 1)[0].strip()).name)
    except InvalidRequirement:
        return None


def requirement_names(lines: Iterable[RequirementLine]) -> set[str]:
    return {r.name for r in lines if r.name}


# -- the files a requirements.txt brings in ----------------------------------------------------

INCLUDES = ("-r", "--requirement", "-c", "--constraint")
_CONSTRAINTS = ("-c", "--constraint")
_EDITABLE = re.compile(r"^(-e|--editable)(\s+|=)")
_ARCHIVE = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")
MAX_INCLUDES = 64  # requirement files one project may chain (a loop or a runaway is refused)


@dataclass(frozen=True)
class RequirementTree:
    """requirements.txt and what it brings in, read as pip reads it.

    files: project-relative path -> content of requirements.txt and every file it includes
    with -r / -c, recursively (an include is relative to the file that names it, as in pip);
    lines: the requirements of requirements.txt and its -r includes, in pip's order (the
    names the pre-installed scan must not add again); local: project-relative local paths
    named as requirements (`./wheels/x.whl`, `-e ./pkg`, `file:vendor/y`), relative to the
    project folder, as pip (run there) reads them; problems: what cannot be brought in, each
    saying where it is named (missing, outside the project, a URL include).
    """

    files: dict[str, bytes]
    lines: tuple[RequirementLine, ...]
    local: tuple[str, ...]
    problems: tuple[str, ...]


def _join(folder: str, path: str) -> str | None:
    """`folder`/`path` normalised, project-relative posix; None when it leaves the project."""
    if path.startswith("/"):
        return None
    parts = [p for p in folder.split("/") if p]
    for piece in path.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(piece)
    return "/".join(parts)


def local_path(text: str) -> str | None:
    """The local path a requirement line installs from, as written (None: a name or a URL).

    `./pkg`, `../x.whl`, `/abs/y.tar.gz`, `-e .`, `file:vendor/z`, `name @ file:///abs/w`,
    and a bare archive name (`x-1.0-py3-none-any.whl`), as pip recognises them."""
    text = _EDITABLE.sub("", text, count=1).strip()
    if " @ " in text:
        text = text.split(" @ ", 1)[1].strip()
    text = text.split(" --", 1)[0].split(";", 1)[0].strip()
    if text.startswith("-"):
        return None
    if text.startswith("file:"):
        rest = text[len("file:"):].split("#", 1)[0]  # `#egg=name` / `#subdirectory=...`: not the path
        return "/" + rest.lstrip("/") if rest.startswith("//") else rest or "."
    if "://" in text:
        return None
    text = re.sub(r"\[[^\]]*\]$", "", text.split("#", 1)[0])  # `./pkg[extra]`: the extras are not the path
    if text.startswith((".", "/")) or text.lower().endswith(_ARCHIVE):
        return text or "."
    return None


def requirement_tree(read: Callable[[str], bytes | None], top: str = "requirements.txt") -> RequirementTree:
    """Walk `top` and its -r / -c includes with `read(project-relative path)` (None: no such
    file). Pure apart from `read`; the backends read the project folder with it."""
    files: dict[str, bytes] = {}
    lines: list[RequirementLine] = []
    local: list[str] = []
    problems: list[str] = []

    def walk(path: str, constraints: bool, named: str | None = None) -> None:
        data = read(path)
        if data is None:
            if named is not None:  # an include that is not there (requirements.txt itself is optional)
                problems.append(f"{named}, which is not a file in the project folder ({path})")
            return
        files[path] = data
        folder = path.rsplit("/", 1)[0] if "/" in path else ""
        for line in requirement_lines(data.decode("utf-8", "replace")):
            where = f"{path} line {line.line}"
            parts = line.text.split(None, 1)
            option, _, inline = parts[0].partition("=")
            if option in INCLUDES:
                target = inline or (parts[1].strip() if len(parts) == 2 else "")
                if not target:
                    continue
                if "://" in target:
                    problems.append(f"{where} includes {target}, a URL: cortexd reads includes from the project "
                                    "folder only; download it into the project and name its path")
                    continue
                joined = _join(folder, target)
                if joined is None:
                    problems.append(f"{where} includes {target}, which is outside the project folder: the "
                                    "image build sees the project folder only; move it into the project")
                    continue
                if joined in files:
                    continue  # already read (pip reads it again; its requirements are the same)
                if len(files) >= MAX_INCLUDES:
                    problems.append(f"{where}: more than {MAX_INCLUDES} requirement files are included; "
                                    "cortexd stops there")
                    return
                walk(joined, constraints or option in _CONSTRAINTS, f"{where} includes {target}")
                continue
            if constraints:
                continue  # a constraints file constrains; its lines install nothing
            lines.append(line)
            named = local_path(line.text)
            if named is not None:
                rel = _join("", named)
                if rel is None:
                    problems.append(f"{where} installs from {named}, which is outside the project folder: the "
                                    "image build sees the project folder only; move it into the project")
                elif rel not in local:
                    local.append(rel)

    walk(top, False)
    return RequirementTree(files, tuple(lines), tuple(local), tuple(problems))


def environment_digest(parts: Mapping[str, bytes | str]) -> str:
    """A stable key of everything that goes into an environment (order-independent)."""
    h = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        data = value.encode() if isinstance(value, str) else value
        h.update(key.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


# -- pip's output ----------------------------------------------------------------------

_COLLECTING = re.compile(r"^\s*Collecting (?P<req>\S+)(?: \(from (?P<from>.*)\))?\s*$")
_FROM_LINE = re.compile(r"-r (?P<file>\S+?) \(line (?P<line>\d+)\)")
_PROCESSING = re.compile(r"^\s*Processing (?P<path>\S+)")
_NO_MATCH = re.compile(r"No matching distribution found for (?P<req>.+?)\s*$")
_NO_VERSION = re.compile(
    r"Could not find a version that satisfies the requirement (?P<req>\S+)(?: \(from versions: (?P<versions>[^)]*)\))?"
)
_OTHER_PYTHON = re.compile(
    r"Ignored the following versions that require a different python version: (?P<what>.+)$", re.MULTILINE)
_INVALID = re.compile(r"Invalid requirement: (?P<req>.+?)(?: \(from line (?P<line>\d+) of (?P<file>\S+)\))?\s*$")
_BUILD_FAILED = re.compile(
    r"(Failed building wheel for (?P<wheel>\S+)|Could not build wheels for (?P<wheels>\S+?),"
    r"|error: metadata-generation-failed|Getting requirements to build wheel did not run successfully"
    r"|did not run successfully)"
)
_CONFLICT = re.compile(r"(Cannot install .+? because these package versions have conflicting dependencies"
                       r"|ResolutionImpossible)")
_NETWORK = re.compile(r"(Max retries exceeded|NewConnectionError|Temporary failure in name resolution"
                      r"|SSLError|ProxyError|ConnectTimeoutError|ReadTimeoutError|Connection refused)")


def _origin(source: str | None) -> tuple[str, int] | None:
    """`-r /p/requirements.txt (line 2)` (maybe after `pandas->`) -> ("requirements.txt", 2)."""
    if not source:
        return None
    found = _FROM_LINE.findall(source)
    if not found:
        return None
    file, line = found[-1]
    return file.rsplit("/", 1)[-1], int(line)


def _where(origin: tuple[str, int] | None) -> str:
    if origin is None:
        return ""
    file, line = origin
    if file == PREINSTALLED_FILE:
        return " (pre-installed on Cortex 0.23, added by cortexd)"
    return f" ({file} line {line})"


def pip_activity(line: str) -> str | None:
    """What pip is doing, from one line of its output, when the line says (else None)."""
    m = _COLLECTING.match(line)
    if m:
        source = m.group("from") or ""
        origin = _origin(source)
        if origin and "->" in source and origin[0] != PREINSTALLED_FILE:
            return f"collecting {m.group('req')} (needed by {origin[0]} line {origin[1]})"
        return f"collecting {m.group('req')}{_where(origin)}"
    m = _PROCESSING.match(line)
    if m:
        return f"processing {m.group('path')}"
    if line.startswith("Installing collected packages: "):
        names = line.split(": ", 1)[1].strip()
        return f"installing {names if len(names) <= 80 else names[:77] + '...'}"
    return None


@dataclass(frozen=True)
class InstallFailure:
    """What a failed install was about: a sentence, and pip's last lines to show under it."""

    summary: str
    detail: str
    requirement: str | None  # the failing requirement as written, when known
    line: int | None  # its line in requirements.txt, when known
    deterministic: bool  # the same inputs would fail again (not a network error)

    def __str__(self) -> str:
        return f"{self.summary}\n{self.detail}" if self.detail else self.summary


def _find_line(req: str, requirements: Sequence[RequirementLine]) -> RequirementLine | None:
    name = _name_of(req.strip("'\""))
    if name is None:
        return None
    return next((r for r in requirements if r.name == name), None)


@dataclass(frozen=True)
class _PipOutput:
    """pip's output of a failed install, read once: its lines, its text, the requirements it was
    collecting (with the file line each came from), and how each failing one is located."""

    lines: tuple[str, ...]
    text: str
    last: str  # the last lines worth showing
    collected: tuple[tuple[str, tuple[str, int] | None], ...]
    requirements: tuple[RequirementLine, ...]
    file_name: str
    python: str  # "Python 3.11"

    @classmethod
    def read(cls, output: Sequence[str], requirements: Sequence[RequirementLine], python_version: str,
             file_name: str, tail: int) -> _PipOutput:
        lines = tuple(line.rstrip() for line in output)
        collected: list[tuple[str, tuple[str, int] | None]] = []
        for ln in lines:
            if ln[:1].isspace():
                continue  # a nested pip's (a build's dependencies): not what this install collected
            m = _COLLECTING.match(ln)
            if m:
                collected.append((m.group("req"), _origin(m.group("from"))))
            m = _PROCESSING.match(ln)
            if m:
                collected.append((m.group("path"), None))
        last = "\n".join(deque((ln for ln in lines if ln.strip()), maxlen=tail))
        return cls(lines, "\n".join(lines), last, tuple(collected), tuple(requirements), file_name,
                   f"Python {python_version}")

    def located(self, req: str, origin: tuple[str, int] | None = None) -> tuple[str, int | None, str]:
        """(requirement, its line, " (requirements.txt line N)"-like words) of a failing `req`."""
        if origin is None:
            for seen, seen_origin in reversed(self.collected):
                if canonical(seen) == canonical(req):
                    origin = seen_origin
                    break
        if origin is None:
            found = _find_line(req, self.requirements)
            if found is not None:
                return found.text, found.line, f" ({self.file_name} line {found.line})"
            return req, None, ""
        if origin[0] != PREINSTALLED_FILE:
            found = next((r for r in self.requirements if r.line == origin[1]), None)
            if found is not None and found.name and found.name != canonical(req):
                # a dependency of that line failed
                return req, found.line, f" (needed by {found.text}, {self.file_name} line {found.line})"
        return req, (origin[1] if origin[0] != PREINSTALLED_FILE else None), _where(origin)


def _invalid_line(out: _PipOutput) -> InstallFailure | None:
    m = _INVALID.search(out.text)
    if not m:
        return None
    req = m.group("req").strip("'\"")
    line = int(m.group("line")) if m.group("line") else None
    where = f" ({out.file_name} line {line})" if line else ""
    return InstallFailure(f"{out.file_name}: invalid requirement {req!r}{where}", out.last, req, line, True)


def _no_release(out: _PipOutput) -> InstallFailure | None:
    m = _NO_MATCH.search(out.text)
    if not m:
        return None
    req, line, where = out.located(m.group("req"))
    other = _OTHER_PYTHON.search(out.text)
    versions = _NO_VERSION.search(out.text)
    found_some = bool(versions and versions.group("versions") and versions.group("versions") != "none")
    if other:
        why = f"its releases that match require another Python ({other.group('what').strip()})"
    elif versions and found_some:
        known = versions.group("versions").split(", ")
        shown = ", ".join(known[-8:]) + (" ..." if len(known) > 8 else "")
        why = f"no release of it matches that pin for this Python (releases for this Python: {shown})"
    else:
        why = "no release of it is available for this Python and platform from the configured indexes"
    # "from versions: none": the index may be down or refusing: worth another try later
    return InstallFailure(f"{req}{where} cannot be installed on {out.python}: {why}", out.last, req, line,
                          bool(other) or found_some)


def _conflict(out: _PipOutput) -> InstallFailure | None:
    if not _CONFLICT.search(out.text):
        return None
    head = next((ln.removeprefix("ERROR: ") for ln in out.lines if "Cannot install" in ln), None)
    summary = f"the requirements in {out.file_name} conflict: " + (
        head or "pip found no set of versions that fits them all")
    return InstallFailure(summary, out.last, None, None, True)


def _build_failed(out: _PipOutput) -> InstallFailure | None:
    m = _BUILD_FAILED.search(out.text)
    if not m:
        return None
    # the build that failed, as pip's own lines say it (core/pip_builds.py): not an earlier
    # "did not run successfully" nor the last "Collecting", which a nested pip prints (issue 17)
    builds = failed_builds(out.lines)
    if builds:
        req, line, where = out.located(builds[0].requirement, _origin(builds[0].source))
        need = build_words(builds[0])[0]
    else:
        req, line, where, need = "a requirement", None, "", "building it from source failed"
    return InstallFailure(
        f"{req}{where} cannot be installed on {out.python}: pip found no wheel of it for this Python, and "
        f"{need}; old pins often predate this Python: pin a newer version",
        out.last, req, line, True,
    )


def _clone_failed(out: _PipOutput) -> InstallFailure | None:
    """A VCS requirement (`git+https://...`) whose repository could not be cloned."""
    clone = failed_clone(out.lines)
    if clone is None:
        return None
    req, line, where = out.located(*next(((r, o) for r, o in out.collected if clone.url in r), (clone.url, None)))
    return InstallFailure(f"{req}{where} cannot be installed: {clone.why}", out.last, req, line, not clone.offline)


def _unreachable(out: _PipOutput) -> InstallFailure | None:
    if not _NETWORK.search(out.text):
        return None
    return InstallFailure(
        f"installing the packages of {out.file_name} failed: the package index could not be reached "
        "(check pip's index and proxy settings: `pip config list`, PIP_INDEX_URL, HTTPS_PROXY)",
        out.last, None, None, False,
    )


def install_failure(
    output: Sequence[str],
    requirements: Sequence[RequirementLine],
    python_version: str,
    file_name: str = "requirements.txt",
    tail: int = 12,
) -> InstallFailure:
    """Read pip's output of a failed `pip install -r requirements.txt` (pure).

    Names the requirement that failed and its line (from pip's own `(line N)` notes,
    else by matching names against `requirements`), and says why in one sentence:
    an invalid line, no release for this Python, conflicting pins, a repository that cannot be
    cloned, a build from source that failed, or the index unreachable (tried in that order).
    """
    out = _PipOutput.read(output, requirements, python_version, file_name, tail)
    for reading in (_invalid_line, _no_release, _conflict, _clone_failed, _build_failed, _unreachable):
        failure = reading(out)
        if failure is not None:
            return failure
    return InstallFailure(f"installing the packages of {file_name} failed", out.last, None, None, False)


def canonical(req: str) -> str:
    """The canonical distribution name a requirement (or a bare name) is about."""
    return _name_of(req.strip("'\"")) or req


# -- pip's settings for uv -------------------------------------------------------------------

# pip options that change nothing uv would do differently here (uv has its own cache and output)
_UV_IGNORED = frozenset({
    "disable-pip-version-check", "no-input", "progress-bar", "no-warn-script-location",
    "root-user-action", "cache-dir", "no-cache-dir", "require-virtualenv", "quiet", "verbose",
    "retries", "no-color", "prefer-binary", "break-system-packages", "log", "no-python-version-warning",
})


def uv_options(settings: Mapping[str, str]) -> tuple[list[str], dict[str, str]] | None:
    """pip's effective settings ({option: value}, pip.conf names) as uv arguments and variables.

    None when a setting has no uv equivalent (client certificates, keyring...): then pip
    installs, so every pip setting is honoured. Indexes are searched as pip does (the best
    version across all of them: uv's unsafe-best-match), not first-index-wins.
    """
    args = ["--index-strategy", "unsafe-best-match"]
    env: dict[str, str] = {}
    for key, value in settings.items():
        values = value.split()
        if key in _UV_IGNORED or not values:
            continue
        if key == "index-url":
            args += ["--index-url", values[0]]
        elif key in ("extra-index-url", "find-links", "constraint"):
            flag = {"extra-index-url": "--extra-index-url", "find-links": "--find-links",
                    "constraint": "--constraint"}[key]
            for v in values:
                args += [flag, v]
        elif key == "trusted-host":
            for v in values:
                args += ["--allow-insecure-host", v]
        elif key == "no-index":
            if value.lower() in ("1", "true", "yes", "on"):
                args.append("--no-index")
        elif key == "cert":
            env["SSL_CERT_FILE"] = value
        elif key == "timeout":
            env["UV_HTTP_TIMEOUT"] = value
        elif key == "proxy":
            env["HTTPS_PROXY"] = env["HTTP_PROXY"] = value
        elif key in ("only-binary", "no-binary"):
            args += [f"--{key}", value]
        elif key == "pre":
            if value.lower() in ("1", "true", "yes", "on"):
                args += ["--prerelease", "allow"]
        else:
            return None
    return args, env


_UV_RESOLVED = re.compile(r"^Resolved (\d+) packages?")
_UV_DOWNLOADING = re.compile(r"^\s*Downloading (\S+)")
_UV_INSTALLED = re.compile(r"^ \+ (\S+)")


def uv_activity(line: str) -> str | None:
    """What uv is doing, from one line of its output, when the line says (else None)."""
    for pattern, words in ((_UV_RESOLVED, "resolved {} packages (uv)"), (_UV_DOWNLOADING, "downloading {}"),
                           (_UV_INSTALLED, "installed {}")):
        m = pattern.match(line)
        if m:
            return words.format(m.group(1))
    return None


def unsatisfied(lines: Sequence[RequirementLine], installed: Mapping[str, str], project_dir: str) -> list[str]:
    """The requirements.txt lines to hand to uv: those the runtime does not already satisfy.

    uv installs into the project's venv without seeing the runtime's packages, so a line the
    runtime satisfies (a name and version range it has, without extras) would be downloaded and
    copied again: it is left out, as pip leaves it ("Requirement already satisfied").
    installed: {canonical name: version} of the runtime. `-r` / `-c` paths are made absolute
    (the lines are written to another folder); options and URLs are kept as they are.
    """
    from packaging.version import InvalidVersion, Version

    out = []
    for r in lines:
        parts = r.text.split(None, 1)
        if len(parts) == 2 and parts[0] in ("-r", "--requirement", "-c", "--constraint"):
            path = parts[1] if parts[1].startswith("/") or "://" in parts[1] else f"{project_dir}/{parts[1]}"
            out.append(f"{parts[0]} {path}")
            continue
        if r.name and r.name in installed:
            try:
                req = Requirement(r.text)
                have = Version(installed[r.name])
            except (InvalidRequirement, InvalidVersion):
                out.append(r.text)
                continue
            applies = req.marker is None or req.marker.evaluate()
            if not applies or (not req.extras and req.url is None
                               and req.specifier.contains(have, prereleases=True)):
                continue
        out.append(r.text)
    return out
