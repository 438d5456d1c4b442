"""The nearest releases that install on this Python, and the words for what cortexd found (pure).

After each line of a failed requirements.txt was checked alone (core/line_checks.py), this
module decides, for each line that cannot be installed here:
- which releases to try instead, nearest first (`NearestSearch`): newer releases than the pin
  allows, oldest first, galloping (1, 2, 4, 8 ... releases on) and then bisecting back to the
  nearest that installs, within a small number of checks; older releases only when no newer
  one does. When pip listed the releases that have a wheel for this Python, only those are tried;
- how a line reads with another release (`rewrite_requirement`), and the whole file with those
  lines replaced (`rewritten_requirements`: same line numbers, includes made absolute, since it
  is written inside the environment folder: the user's files are never changed);
- the words: the one-pass report of every failing line (`one_pass_report`, the API's reason)
  and each change of the opt-in nearest-pins mode (`change_notice`, e.g. `scikit-learn==0.21.3
  -> 1.1.3: 0.21.3 has no build for Python 3.11`).
backends/requirement_checks.py runs the checks this module asks for. No I/O here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from cortexd.core.line_checks import INDEX_UNREACHABLE, Cause, Verdict
from cortexd.core.requirements import RequirementLine

MAX_TRIES = 8  # releases checked per failing line before giving up on finding one
OPT_IN = "CORTEXD_NEAREST_PINS=1"  # how a user opts in (named in the report)


@dataclass(frozen=True)
class Nearest:
    """What the search for a line found: the nearest release that installs here (None: none
    found), the releases checked that do not, or why no search was made."""

    version: str | None = None
    tried: tuple[str, ...] = ()
    not_searched: str = ""
    unsure_after: str = ""  # the checks ran out before the nearest: releases after this one unchecked


@dataclass(frozen=True)
class OnePass:
    """What checking each line of a failed requirements.txt alone found: the verdicts, the
    nearest release per failing line, and pip's last lines of the failed install. The same
    inputs give the same answer, so an environment of the same files with nearest pins starts
    from it instead of checking again (environments.py)."""

    verdicts: tuple[Verdict, ...]
    nearest: Mapping[int, Nearest]
    detail: str = ""

    @property
    def failing(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.cause is not None]

    @property
    def deterministic(self) -> bool:
        """Every failing line fails again as it is (not the network): worth remembering."""
        return bool(self.failing) and all(v.cause.deterministic for v in self.failing if v.cause)


# -- which releases ------------------------------------------------------------------------------


def not_relaxable(line: RequirementLine) -> str | None:
    """Why a line cannot be moved to another release (None: it can): it must name a release of a
    distribution from an index, without hashes."""
    if line.name is None:
        return "it is not a release from an index (a URL, a path or an option)"
    if "--hash" in line.text:
        return "it is pinned by hash"
    try:
        req = Requirement(line.text.split(" --", 1)[0].strip())
    except InvalidRequirement:
        return "pip cannot read it"
    if req.url:
        return "it installs from a URL"
    if not req.specifier:
        return "it names no version (the newest release that matches was tried)"
    return None


def _versions(values: Sequence[str]) -> list[Version]:
    out = []
    for v in values:
        try:
            out.append(Version(v))
        except InvalidVersion:
            continue
    return sorted(set(out))


def candidates(requirement: str, versions: Sequence[str],
               wheels: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(newer, older): the releases to try instead of `requirement`'s, each nearest first.

    versions: the releases pip lists for this Python (`pip index versions`); wheels: those
    with a wheel for it, when pip said (only they are tried then). Pre-releases only when the
    pin names one. Releases the pin allows are not tried (pip chose among them already)."""
    req = Requirement(requirement.split(" --", 1)[0].strip())
    spec = req.specifier
    pool = _versions(wheels if wheels else versions)
    named = _versions([s.version.removesuffix(".*") for s in spec])
    allowed = [v for v in _versions(versions) + named if spec.contains(v, prereleases=True)]
    top = max(allowed) if allowed else (max(named) if named else None)
    bottom = min(allowed) if allowed else (min(named) if named else None)
    pre = any(v.is_prerelease for v in named)
    pool = [v for v in pool if (pre or not v.is_prerelease) and not spec.contains(v, prereleases=True)]
    newer = [str(v) for v in pool if top is None or v > top]
    older = [str(v) for v in reversed(pool) if bottom is not None and v < bottom]
    return newer, older


class NearestSearch:
    """Which release to check next (`next()`), told each outcome (`record()`), within `bound`
    checks: gallop over the newer releases (1st, 2nd, 4th, 8th ... on), bisect back between the
    last that failed and the first that installs, then the older releases one by one. Assumes
    that past a release that installs the next ones do too, as with old pins on a new Python;
    what it returns was checked either way."""

    def __init__(self, newer: Sequence[str], older: Sequence[str] = (), bound: int = MAX_TRIES):
        self.newer, self.older, self.bound = list(newer), list(older), bound
        self.outcomes: dict[str, bool] = {}
        self._low = -1  # index in newer of the furthest release that failed
        self._high: int | None = None  # index in newer of the nearest release that installs
        self._jump = 1

    def next(self) -> str | None:
        if len(self.outcomes) >= self.bound or (self.found is not None and self._settled()):
            return None
        if self._high is not None:
            return self.newer[(self._low + self._high) // 2]
        if self._low < len(self.newer) - 1:
            return self.newer[min(self._low + self._jump, len(self.newer) - 1)]
        return next((v for v in self.older if v not in self.outcomes), None)

    def _settled(self) -> bool:
        return self._high is None or self._high - self._low <= 1

    def record(self, version: str, ok: bool) -> None:
        self.outcomes[version] = ok
        if version not in self.newer:
            return
        index = self.newer.index(version)
        if ok:
            self._high = index if self._high is None else min(self._high, index)
        else:
            self._low = max(self._low, index)
            if self._high is None:
                self._jump *= 2

    @property
    def found(self) -> str | None:
        if self._high is not None:
            return self.newer[self._high]
        return next((v for v in self.older if self.outcomes.get(v)), None)

    @property
    def unsure_after(self) -> str:
        """When the bound stopped a bisection: the last release known not to install, below
        `found` (the nearest lies between them); else ""."""
        if self._high is None or self._high - self._low <= 1:
            return ""
        return self.newer[self._low] if self._low >= 0 else ""

    @property
    def tried(self) -> tuple[str, ...]:
        return tuple(v for v, ok in self.outcomes.items() if not ok)


# -- rewriting -----------------------------------------------------------------------------------


def rewrite_requirement(text: str, version: str) -> str:
    """`scikit-learn[alldeps]==0.21.3 ; python_version > "3"` -> the same pinned to `version`
    (name, extras, marker and inline options kept)."""
    head, sep, options = text.partition(" --")
    req = Requirement(head.strip())
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    return f"{req.name}{extras}=={version}{marker}" + (f" --{options}" if sep else "")


_PATH_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-f", "--find-links")


def absolute_paths(line: str, project_dir: str) -> str:
    """An include or find-links line with its relative path made absolute (the file is read
    from another folder); any other line as it is."""
    stripped = line.strip()
    for option in _PATH_OPTIONS:
        for sep in ("=", " "):
            if stripped.startswith(option + sep):
                path = stripped[len(option) + 1:].strip()
                if path and "://" not in path and not os.path.isabs(path):
                    return f"{option} {os.path.join(project_dir, path)}"
    return line


def rewritten_requirements(text: str, changes: Mapping[int, str], project_dir: str) -> str:
    """requirements.txt with the requirement starting on each line of `changes` replaced (its
    continuation lines left empty), every line keeping its number, so pip's `(line N)` still
    names the user's line; relative includes and find-links made absolute."""
    out = []
    skipping = False
    for number, raw in enumerate(text.splitlines(), 1):
        if skipping:
            out.append("")
            skipping = raw.rstrip().endswith("\\")
            continue
        if number in changes:
            out.append(changes[number])
            skipping = raw.split(" #", 1)[0].rstrip().endswith("\\")
            continue
        out.append(absolute_paths(raw, project_dir))
    return "\n".join(out) + "\n"


# -- words ---------------------------------------------------------------------------------------


def change_notice(line: RequirementLine, version: str, cause: Cause) -> str:
    """`scikit-learn==0.21.3 -> 1.1.3: 0.21.3 has no build for Python 3.11`."""
    why = f"it needs {cause.requirement}: {cause.why}" if cause.dependency else cause.why
    return f"{line.text} -> {version}: {why}"


def _entry(verdict: Verdict, nearest: Nearest | None, file_name: str) -> str:
    line, cause = verdict.line, verdict.cause
    where = f"({file_name} line {line.line})"
    if cause is None:
        return f"{line.text} {where}: not checked: {verdict.undecided}"
    head = f"{cause.requirement}, needed by {line.text} {where}" if cause.dependency else f"{line.text} {where}"
    words = f"{head}: {cause.why}" + (f"; {cause.more}" if cause.more else "")
    if nearest is None:
        return words
    of = f" of {line.name}" if cause.dependency else ""
    if nearest.version is not None and nearest.unsure_after:
        return (f"{words}; a release{of} that installs here: {nearest.version} (nearer ones after "
                f"{nearest.unsure_after} were not all checked)")
    if nearest.version is not None:
        return f"{words}; the nearest release{of} that installs here: {nearest.version}"
    if nearest.tried:
        return f"{words}; none of the releases{of} tried installs here ({', '.join(nearest.tried)})"
    return words


def _unreachable_entry(verdicts: Sequence[Verdict], file_name: str) -> str:
    """Lines that failed only because the index did not answer, said once."""
    cause = verdicts[0].cause
    assert cause is not None
    named = ", ".join(f"{v.line.text} (line {v.line.line})" for v in verdicts)
    return f"{named} ({file_name}): {cause.why}" + (f"; {cause.more}" if cause.more else "")


def one_pass_report(verdicts: Sequence[Verdict], nearest: Mapping[int, Nearest], python: str,
                    file_name: str = "requirements.txt", opted_in: bool = False) -> tuple[str, bool]:
    """(summary, deterministic) of every line that cannot be installed here, for the API's
    reason: one sentence for one line, else a line per requirement under a heading; the lines
    that failed only because the index did not answer are named together."""
    failing = [v for v in verdicts if v.cause is not None]
    unsure = [v for v in verdicts if v.cause is None and v.undecided]
    offline = [v for v in failing if v.cause is not None and v.cause.why == INDEX_UNREACHABLE]
    entries = [_entry(v, nearest.get(v.line.line), file_name) for v in failing if v not in offline]
    if offline:
        entries.append(_unreachable_entry(offline, file_name))
    entries += [_entry(v, None, file_name) for v in unsure]
    deterministic = bool(failing) and all(v.cause.deterministic for v in failing if v.cause)
    hint = "" if opted_in or nearest_changes(failing, nearest) is None else (
        f"\n`cortexd deploy --nearest-pins` ({OPT_IN} for every project) installs these nearest releases "
        f"instead, leaving {file_name} as it is")
    if len(entries) == 1 and len(failing) == 1:
        head, _, rest = entries[0].partition(": ")
        return f"{head} cannot be installed here: {rest}{hint}", deterministic
    count = f"{len(failing)} requirement{'s' if len(failing) != 1 else ''}"
    unchecked = f", {len(unsure)} could not be checked" if unsure else ""
    summary = (f"{count} of {file_name} cannot be installed here{unchecked} (Python {python}; each line "
               "checked alone):\n")
    return summary + "\n".join(f"- {e}" for e in entries) + hint, deterministic


def nearest_changes(failing: Sequence[Verdict], nearest: Mapping[int, Nearest]) -> dict[int, tuple[str, str]] | None:
    """{line: (the line pinned to its nearest release, the notice saying so)} for the nearest-pins
    mode; None when a failing line has no release to move to (the install would fail again)."""
    out = {}
    for v in failing:
        found = nearest.get(v.line.line)
        if v.cause is None or found is None or found.version is None:
            return None
        pinned = rewrite_requirement(v.line.text, found.version)
        out[v.line.line] = (pinned, change_notice(v.line, found.version, v.cause))
    return out
