"""Checking each requirements.txt line alone with pip, after an install failed (I/O; process backend).

pip stops at the first requirement it cannot install, so a 2020 project with four old pins
would be fixed one retry at a time. When an environment build fails for good,
environment_build.py asks this module to check every line of the project's requirements.txt
alone, a few at a time, each within a time budget, with the build's own installer settings
(the same user, environment and pip configuration as the real install, on the interpreter
whose packages the environment layers under its own): the steps and what they mean are in
core/line_checks.py. For each line that cannot be installed it then looks for the nearest
release that does (core/nearest_pins.NearestSearch), among the releases pip listed with a wheel
for this Python, else those `pip index versions` lists, checking each candidate the same way
(from wheels only when the distribution has wheels for this Python: no build is started for a
candidate). What a check runs is the Runner's to do (EnvironmentBuild._capture: as the
build's user, logged to the environment's cortexd-install.log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from cortexd.core.line_checks import LineRun, Step, Verdict, builds_in_report, index_versions, verdict, wheel_versions
from cortexd.core.nearest_pins import (
    Nearest,
    NearestSearch,
    absolute_paths,
    candidates,
    not_relaxable,
    rewrite_requirement,
)
from cortexd.core.requirements import RequirementLine, local_path

# (command, seconds it may take) -> (True / False: its exit, None: stopped at the deadline; its output)
Runner = Callable[[list[str], float], Awaitable[tuple[bool | None, list[str]]]]

CONCURRENT_CHECKS = 3  # pip runs at once (each is mostly waiting on the index)
CHECK_SECONDS = 120.0  # one line's check, its steps together (a source build may take long)
SEARCH_SECONDS = 90.0  # one line's search for the nearest release that installs here
# requirements.txt options that say where releases come from: kept in each line's check file
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links",
                  "--trusted-host", "--pre", "--prefer-binary")
_KEPT_OPTIONS = (*_INDEX_OPTIONS, "-c", "--constraint")


def _option(text: str) -> str:
    return text.split(None, 1)[0].split("=", 1)[0]


class RequirementChecks:
    """The one-pass check of a project's requirement lines (see the module docstring).

    run: runs a pip command as the build's installer does; pip: the command that starts pip for
    the environment (`python -m pip` on its base interpreter); work: a folder the installers'
    user may write (check files, reports, wheels built); lines: every line of requirements.txt
    (its options apply to each check); project_dir: the folder pip runs in; python: "3.11";
    say: progress, for `cortexd get`."""

    def __init__(self, run: Runner, pip: Sequence[str], work: Path, lines: Sequence[RequirementLine],
                 project_dir: str, python: str, say: Callable[[str], None],
                 check_seconds: float = CHECK_SECONDS, search_seconds: float = SEARCH_SECONDS):
        self._run, self._pip, self._work, self._project = run, list(pip), work, project_dir
        # the check files are written elsewhere: their relative paths are the project's
        self._options = [absolute_paths(r.text, project_dir) for r in lines
                         if r.text.startswith("-") and _option(r.text) in _KEPT_OPTIONS]
        self._python, self._say = python, say
        self._check_seconds, self._search_seconds = check_seconds, search_seconds
        self._slots = asyncio.Semaphore(CONCURRENT_CHECKS)
        self._runs: dict[int, LineRun] = {}
        self._files = 0

    # -- checking the lines ---------------------------------------------------------------------
    async def one_pass(self, lines: Sequence[RequirementLine], known: Mapping[int, Verdict] | None = None
                       ) -> tuple[list[Verdict], dict[int, Nearest]]:
        """Each requirement line (not the options) checked alone, all of them at once, and for
        each that cannot be installed here the search for its nearest release, started as soon
        as its own check ends; `known`: the verdicts already had, by line (a failed build that
        pip's answer traced to its line)."""
        known = known or {}
        wanted = [r for r in lines if r.name is not None or not r.text.startswith("-")
                  or _option(r.text) in ("-e", "--editable", "-r", "--requirement")]
        to_check = len([r for r in wanted if r.line not in known])
        done = 0

        async def one(line: RequirementLine) -> tuple[Verdict, Nearest | None]:
            nonlocal done
            found = known.get(line.line)
            if found is None:
                run = await self.check(line.text, line.name, self._check_seconds)
                self._runs[line.line] = run
                done += 1
                self._say(f"checked {done} of {to_check} requirement lines alone on Python {self._python}")
                found = verdict(line, run, self._python)
                if found.undecided:
                    found = Verdict(line, undecided=f"{found.undecided} within {self._check_seconds:.0f}s")
            return found, (await self._search(found) if found.fails else None)

        self._say(f"checking each of {to_check} requirement lines alone on Python {self._python}")
        results = await asyncio.gather(*(one(r) for r in wanted))
        return [v for v, _ in results], {v.line.line: n for v, n in results if n is not None}

    async def check(self, requirement: str, name: str | None, seconds: float, wheels_only: bool = False) -> LineRun:
        """The steps of one requirement's check (core/line_checks.py), within `seconds`; a
        wheels-only check stops after the first step. Each dry run writes a --report, which also
        lets pip dry-run on an interpreter marked externally managed (nothing is installed)."""
        deadline = time.monotonic() + seconds
        file = self._file(requirement)
        dry_run = [*self._pip, "install", "--dry-run", "--progress-bar", "off", "-r", str(file)]
        binary = None
        if name is not None and local_path(requirement) is None and "://" not in requirement:
            binary = await self._step([*dry_run, "--only-binary", ":all:", "--report",
                                       str(file.with_suffix(".wheels.json"))], deadline)
            if binary.ok or wheels_only:
                return LineRun(binary)
        report = file.with_suffix(".json")
        full = await self._step([*dry_run, "--report", str(report)], deadline)
        if not full.ok:
            return LineRun(binary, full)
        builds = []
        for _, target in builds_in_report(_read(report)):
            step = await self._step([*self._pip, "wheel", "--no-deps", "--progress-bar", "off",
                                     "-w", str(self._work / "wheels"), "-r", str(self._file(target))], deadline)
            builds.append((target, step))
            if not step.ok:
                break
        return LineRun(binary, full, tuple(builds))

    async def _step(self, cmd: list[str], deadline: float) -> Step:
        left = deadline - time.monotonic()
        if left <= 0:
            return Step(None)
        async with self._slots:
            left = deadline - time.monotonic()
            if left <= 0:
                return Step(None)
            ok, output = await self._run(cmd, left)
        return Step(ok, tuple(output))

    def _file(self, requirement: str) -> Path:
        """A requirements file of one requirement under the project's own options (indexes,
        constraints), as pip reads it in the real install; readable by the installers' user
        whatever the daemon's umask."""
        self._files += 1
        path = self._work / f"check-{self._files}.txt"
        path.write_text("".join(f"{line}\n" for line in [*self._options, absolute_paths(requirement, self._project)]))
        path.chmod(0o644)
        return path

    # -- the nearest releases -------------------------------------------------------------------
    async def _search(self, failing: Verdict) -> Nearest:
        """The nearest release of a failing line that installs here (core/nearest_pins.py)."""
        line = failing.line
        why = not_relaxable(line)
        cause = failing.cause
        if why is not None or line.name is None or cause is None or not cause.deterministic \
                or not (cause.no_build or cause.dependency):
            return Nearest(not_searched=why or "another release would not change the cause")
        deadline = time.monotonic() + self._search_seconds
        run = self._runs.get(line.line)
        if run is None or run.binary is None:  # pip's answer to the file was its verdict
            run = await self.check(line.text, line.name, max(deadline - time.monotonic(), 0), wheels_only=True)
        # the releases with a wheel here, when pip listed them (the line's own pin has none);
        # for a dependency's failure, every release of the line's own distribution
        wheels = wheel_versions(run.binary.output, line.name) if run.binary else None
        if wheels is None or cause.dependency:
            listed = await self._step([*self._pip, "index", "versions", line.name, *self._index_args()], deadline)
            versions = index_versions(listed.output)
        else:
            versions = wheels
        newer, older = candidates(line.text, versions, wheels)
        search = NearestSearch(newer, older)
        while (version := search.next()) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._say(f"looking for the nearest release of {line.name} that installs here: trying {version}")
            # a distribution with no wheel for this Python at all (pure sdists) is built; else wheels only
            candidate = await self.check(rewrite_requirement(line.text, version), line.name, left,
                                         wheels_only=wheels != [])
            outcome = verdict(line, candidate, self._python)
            search.record(version, outcome.cause is None and not outcome.undecided)
        return Nearest(search.found, search.tried, unsure_after=search.unsure_after)

    def _index_args(self) -> list[str]:
        """The index options of requirements.txt, as `pip index versions` arguments."""
        args: list[str] = []
        for text in self._options:
            parts = text.split(None, 1)
            option, eq, inline = parts[0].partition("=")
            if option in _INDEX_OPTIONS:
                args += [option, inline] if eq else [option, *parts[1:]]
        return args


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
