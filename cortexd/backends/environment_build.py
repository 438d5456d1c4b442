"""One environment build: the installers a project's environment needs, run under the
replicas' rules (the process backend; environments.py decides when and publishes the result).

uv installs first when it can, being 10-20x faster. `uv pip install` does not see packages
outside the target environment, so left alone it would re-resolve the whole closure into the
venv (python-dateutil 4.0.0 over the runtime's 2.9.0.post0, which botocore needs <3). So uv gets
only the lines the runtime does not satisfy already, and the runtime's versions as constraints
for everything the project does not name: it then picks what pip would, and what it copies into
the venv is the runtime's own versions. pip installs instead when uv is absent, when a pip
setting has no uv equivalent, or when uv fails (a pin that needs a newer runtime package, a bad
line): pip's answer is the one reported. A project `pip.conf` (Cortex's way to a private index)
is layered on top as PIP_* variables, which pip ranks above its configuration files; uv gets the
same merged settings (pip_settings.merged_pip_settings) as options (core/requirements.uv_options).

A build runs project code (a setup.py of an sdist, a local `./pkg`, dependencies.sh), so its
installers run as BuildAs says: for an isolated API a fresh uid leased for the build (with
RLIMIT_NPROC, so all it forks can be killed) and a HOME of the build's own for pip's and uv's
caches, so no API's code can plant anything a later build of another project would run; else
the daemon's user. The parts of the venv they write are that uid's while it runs (_hand_over);
the venv's own folder stays the daemon's. They get installer_environment(): what replicas get
plus the installers' own settings of the daemon's environment (PIP_*, UV_*, proxies, where the
user's pip.conf is), never CORTEXD_* or anything else the daemon holds. Their command lines and
output go to the environment's cortexd-install.log (0600) with credentials masked. seal() makes
the built folder the daemon's and read-only to everyone else before it is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import sys
import venv
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cortexd.backends.environment_plan import EnvironmentPlan, runtime_pins, runtime_site_dirs, uv_binary
from cortexd.backends.isolation import ReplicaUser, child_setup, inherited_environment
from cortexd.backends.pip_settings import merged_pip_settings
from cortexd.backends.requirement_checks import RequirementChecks
from cortexd.core.line_checks import known_failures
from cortexd.core.nearest_pins import OnePass, nearest_changes, one_pass_report, rewritten_requirements
from cortexd.core.requirements import (
    PREINSTALLED_FILE,
    InstallFailure,
    RequirementLine,
    canonical,
    install_failure,
    pip_activity,
    unsatisfied,
    uv_activity,
    uv_options,
)
from cortexd.credentials import redact_credentials
from cortexd.errors import DependencyError
from cortexd.spec.model import APISpec

log = logging.getLogger("cortexd.environments")

RUNTIME_PTH = "_cortexd_runtime.pth"
# pip options that would send the install somewhere else than the environment
_PIP_VARS_DROPPED = ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_PYTHON", "PIP_REQUIRE_VIRTUALENV")
# what installers read from the environment besides what replicas get (installer_environment)
_INSTALLER_PREFIXES = ("PIP_", "UV_", "CONDA", "MAMBA", "PYTHONHTTPSVERIFY")
_INSTALLER_VARS = frozenset({"HOME", "USER", "LOGNAME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                             "XDG_CONFIG_DIRS", "CURL_CA_BUNDLE", "NETRC"})
_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "no_proxy", "all_proxy"})


def installer_environment(base: dict[str, str] | os._Environ, home: str | None = None) -> dict[str, str]:
    """The environment pip, uv, conda and dependencies.sh run with: a build runs project code
    (a setup.py, a local `-e ./pkg`), so it gets the replica's rules (isolation.py
    inherited_environment) plus the installers' own settings of the daemon's environment
    (PIP_*, UV_*, conda's, proxies, where the user's pip.conf is), never CORTEXD_* or anything
    else the daemon holds. `home`: HOME for an installer that runs as another user. Pure."""
    env = inherited_environment(base)
    env.setdefault("PATH", os.defpath)
    for key, value in base.items():
        if key.startswith("CORTEXD_") or key in _PIP_VARS_DROPPED:
            continue
        if key.startswith(_INSTALLER_PREFIXES) or key in _INSTALLER_VARS or key.lower() in _PROXY_VARS:
            env[key] = value
    if home is not None:
        env["HOME"] = home
        for key in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            env.pop(key, None)
    return env


class BuildUsers(Protocol):
    """Who builds run as (the process backend): lease one for a build, end it after."""

    def lease_build_user(self, spec: APISpec, interpreter: str) -> ReplicaUser | None:
        """(blocking) The build's user; None: the daemon's own."""

    def leases(self, user: ReplicaUser) -> bool:
        """Whether `user` is a uid leased for one build (end_build() then gives it back)."""

    def end_build(self, user: ReplicaUser | None) -> None:
        """(blocking) Kill what a leased build user left running; give its uid back."""


BUILD_MAX_PROCESSES = 1024  # RLIMIT_NPROC of a build's own uid: what it forks can all be killed


@dataclass(frozen=True)
class BuildAs:
    """Who one build runs as (None: the daemon) and its own HOME; leased: a uid of the build's
    own (BuildUsers.lease_build_user), given back when it ends."""

    user: ReplicaUser | None
    home: Path | None
    leased: bool


class RequirementsFailed(DependencyError):
    """pip could not install requirements.txt: its answer, read (core/requirements.install_failure),
    and its last lines (`output`)."""

    def __init__(self, failure: InstallFailure, output: list[str]):
        super().__init__(failure.summary, detail=failure.detail, deterministic=failure.deterministic)
        self.failure = failure
        self.output = output


def _python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _write_readable(path: Path, text: str) -> None:
    """(blocking) A file and its new folder the installers' user reads, whatever the daemon's umask."""
    path.parent.mkdir()
    path.write_text(text)
    for p, mode in ((path.parent, 0o755), (path, 0o644)):
        p.chmod(mode)


def _private(path: str, flags: int) -> int:
    """open()'s opener for a build log: made 0600 (it names the project's index and paths)."""
    return os.open(path, flags, 0o600)


def seal(folder: Path) -> None:
    """(blocking) Make a built environment the daemon's and read-only to everyone else: owned
    by the daemon's uid, no write bit for group or others, no set-uid/set-gid bits (computed
    from the mode before the chown, so none comes back). Symlinks are changed, never followed;
    a file owned by the daemon with another link (a hard link to a file elsewhere) is left as
    it is."""
    me, group = os.geteuid(), os.getegid()
    for path in [folder, *folder.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != me:
                os.chown(path, me, group, follow_symlinks=False)
            continue
        if st.st_uid == me and st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode) & ~0o7022
        if (st.st_uid, st.st_gid) != (me, group):
            os.chown(path, me, group, follow_symlinks=False)
        if mode != stat.S_IMODE(st.st_mode) or st.st_uid != me:
            os.chmod(path, mode)


class EnvironmentBuild:
    """The installers of one build: a venv made in `folder`, then dependencies.sh, conda and
    requirements.txt (uv, else pip) into it, each as `build_as` says, its progress said through
    `say(phase, detail)`. ProjectEnvironments makes one per build, and seals and publishes it."""

    def __init__(self, python: str, build_as: BuildAs, say: Callable[..., None],
                 host_pip_config: Callable[[], Awaitable[str]], use_uv: bool = True):
        self.python = python  # runs pip and makes the venv (the runtime's interpreter)
        self.build_as = build_as
        self.say = say
        self.host_pip_config = host_pip_config
        self.use_uv = use_uv
        self.changes: tuple[str, ...] = ()  # nearest pins installed instead of the project's, in words
        self.checked: OnePass | None = None  # what checking each line alone found, when it ran

    async def install(self, plan: EnvironmentPlan, folder: Path, checked: OnePass | None = None) -> str | None:
        """Everything the build runs, in order; the installer that took requirements.txt.
        checked: what checking each line alone found for these files before (an environment of
        them with the pins as written failed): with nearest pins, the nearest releases install
        at once."""
        self.say("installing requirements", "creating the environment")
        await asyncio.to_thread(self._create_venv, folder, plan)
        build_log = folder / "cortexd-install.log"
        if plan.dependencies_sh is not None:
            self.say("running dependencies.sh", "")
            await self._run(plan, ["bash", str(Path(plan.project_dir) / "dependencies.sh")], build_log,
                            "dependencies.sh", self._installer_env(plan))
        if plan.conda_packages is not None:
            await self._conda(plan, folder, build_log)
        if plan.additions:
            (folder / PREINSTALLED_FILE).write_text("".join(f"{a.distribution}\n" for a in plan.additions))
        if not (plan.requirements and plan.lines) and not plan.additions:
            return None
        requirements = Path(plan.project_dir) / "requirements.txt" if plan.requirements and plan.lines else None
        if checked is not None and plan.nearest_pins and requirements is not None:
            return await self._nearest(plan, folder, build_log, checked)
        try:
            return await self._requirements(plan, folder, build_log, requirements, plan.lines)
        except RequirementsFailed as e:
            if not plan.lines or not (e.failure.deterministic or e.failure.line is not None):
                raise  # the index cannot be reached: each line alone would say the same
            self.checked = await self._check_lines(plan, folder, build_log, e)
            return await self._nearest(plan, folder, build_log, self.checked)

    def _pip_env(self, plan: EnvironmentPlan) -> dict[str, str]:
        """What pip runs with: the installers' environment, the project's pip.conf over it."""
        env = self._installer_env(plan)
        env.update(plan.pip_env)
        env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        return env

    async def _requirements(self, plan: EnvironmentPlan, folder: Path, build_log: Path,
                            requirements: Path | None, lines: Sequence[RequirementLine]) -> str:
        """Install `requirements` (requirements.txt, or the nearest-pins copy of it, whose
        requirements are `lines`) and the added pre-installed packages: uv, else pip."""
        pip_files = ["-r", str(requirements)] if requirements is not None else []
        if plan.additions:
            pip_files += ["-r", str(folder / PREINSTALLED_FILE)]
        env = self._pip_env(plan)
        if await self._install_with_uv(plan, folder, lines, env, build_log):
            return "uv"
        cmd = [self.python, "-m", "pip", "--python", str(folder / "bin" / "python"), "install", "--progress-bar",
               "off", "--no-warn-script-location", *pip_files]
        self.say("installing requirements", "starting pip")
        await self._run(plan, cmd, build_log, "requirements.txt", env)
        return "pip"

    async def _check_lines(self, plan: EnvironmentPlan, folder: Path, build_log: Path,
                           failed: RequirementsFailed) -> OnePass:
        """After pip failed for good: every line of requirements.txt checked alone, in one pass,
        and the nearest release that installs here of each that does not (requirement_checks.py).
        Lines that all install alone fail together: pip's own answer is raised then."""
        work = folder / "cortexd-checks"
        await asyncio.to_thread(self._work_folder, work)
        python = _python_version()
        # pip on the environment's base interpreter sees what the environment layers under its
        # own packages (the runtime's), and starts in half the time of `--python <venv>`, which
        # conda's packages need (they are the venv's alone)
        pip = [self.python, "-m", "pip"]
        if plan.conda_packages is not None:
            pip += ["--python", str(folder / "bin" / "python")]
        checks = RequirementChecks(
            lambda cmd, seconds: self._capture(plan, cmd, seconds, build_log), pip, work, plan.lines,
            plan.project_dir, python, lambda detail: self.say("checking requirements", detail))
        # the lines whose failed build pip's own answer traces to them are not built again (a
        # build may be long); the rest, the one pip's sentence named included, are checked alone:
        # whom pip's last lines blame is what issue 17 found wrong
        known = known_failures(failed.output, plan.lines, str(Path(plan.project_dir) / "requirements.txt"), python)
        try:
            verdicts, nearest = await checks.one_pass(plan.lines, known)
            if not any(v.fails for v in verdicts):
                raise failed  # each line installs alone: they fail together (pip's answer says how)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)
        return OnePass(tuple(verdicts), nearest, failed.detail)

    async def _nearest(self, plan: EnvironmentPlan, folder: Path, build_log: Path, checked: OnePass) -> str:
        """The one-pass report as the API's DependencyError; or, with nearest pins and a release
        found for every failing line, those releases installed instead, from a copy of
        requirements.txt in the environment folder (the project's files are never changed),
        each change said (self.changes)."""
        changes = nearest_changes(checked.failing, checked.nearest) if plan.nearest_pins else None
        if changes is None:
            summary, deterministic = one_pass_report(checked.verdicts, checked.nearest, _python_version(),
                                                     opted_in=plan.nearest_pins)
            raise DependencyError(summary, detail=checked.detail, deterministic=deterministic)
        notices = [notice for _, notice in changes.values()]
        for notice in notices:
            self.say("installing requirements", f"nearest pin: {notice}")
        await asyncio.to_thread(self._recreate_venv, folder, plan)  # nothing a failed pip left behind
        text = (plan.requirements or b"").decode("utf-8", "replace")
        relaxed = folder / "cortexd-nearest" / "requirements.txt"  # so pip's words name requirements.txt
        await asyncio.to_thread(_write_readable, relaxed, rewritten_requirements(
            text, {n: t for n, (t, _) in changes.items()}, plan.project_dir))
        lines = [RequirementLine(r.line, changes[r.line][0], r.name) if r.line in changes else r for r in plan.lines]
        try:
            installer = await self._requirements(plan, folder, build_log, relaxed, lines)
        except DependencyError as e:
            raise DependencyError(f"{e.summary}\n(with the nearest releases: {'; '.join(notices)})",
                                  detail=e.detail, deterministic=e.deterministic) from None
        self.changes = tuple(notices)
        return installer

    def _work_folder(self, work: Path) -> None:
        """(blocking) A folder the installers' user writes the checks' files in."""
        work.mkdir(exist_ok=True)
        (work / "wheels").mkdir(exist_ok=True)
        user = self.build_as.user if self.build_as is not None else None
        if user is not None:
            for path in (work, work / "wheels"):
                os.chown(path, user.uid, user.gid)

    async def _install_with_uv(self, plan: EnvironmentPlan, folder: Path, lines: Sequence[RequirementLine],
                               env: dict[str, str], build_log: Path) -> bool:
        """Install with uv when it can do what pip would (True: done); else leave it to pip.

        uv does not see the runtime's packages as installed, so it is given their versions
        as constraints (for every package the project does not name itself): it then picks
        what pip would have reused, and the copies it puts in the venv are the same versions.
        When that cannot resolve (the project needs a newer version of a runtime package),
        or uv fails in any way, pip installs instead and its answer is the one reported.
        """
        uv = uv_binary()
        if uv is None or not self.use_uv:
            return False
        options = uv_options(merged_pip_settings(await self.host_pip_config(), env))
        if options is None:
            return False  # a pip setting uv cannot honour
        args, uv_env = options
        wanted = unsatisfied(lines, dict(runtime_pins(versions=True)), plan.project_dir)
        wanted += [a.distribution for a in plan.additions]
        if not wanted:
            self.say("installing requirements", "the runtime has every requirement")
            return True  # nothing to install: the runtime satisfies every line
        # what the project asks for is free; everything else stays at the runtime's version
        named = {canonical(line) for line in wanted if not line.startswith("-")}
        constraints = folder / "cortexd-runtime-constraints.txt"
        constraints.write_text("".join(f"{pin}\n" for name, pin in runtime_pins() if name not in named))
        requirements = folder / "cortexd-requirements-uv.txt"
        requirements.write_text("".join(f"{line}\n" for line in wanted))
        cmd = [uv, "pip", "install", "--python", str(folder / "bin" / "python"), "--color", "never",
               "-r", str(requirements), "--constraint", str(constraints), *args]
        self.say("installing requirements", "resolving with uv")
        try:
            await self._run(plan, cmd, build_log, "uv", {**env, **uv_env})
        except DependencyError as e:
            log.info("uv could not install %s (%s); pip installs instead", plan.project_dir, e)
            with open(build_log, "a", encoding="utf-8", opener=_private) as out:  # noqa: ASYNC230 - a local log file
                out.write("uv failed; installing with pip instead\n")
            # a fresh venv (nothing uv may have left behind), keeping this build's own files
            await asyncio.to_thread(self._recreate_venv, folder, plan)
            return False
        return True

    def _create_venv(self, folder: Path, plan: EnvironmentPlan) -> None:
        try:
            venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(folder)
            site = folder / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
            # the runtime's packages come after the project's (site.addsitedir also runs their .pth files)
            lines = [f"import site; site.addsitedir({d!r})" for d in runtime_site_dirs()]
            (site / RUNTIME_PTH).write_text("\n".join(lines) + "\n")
            build_as = self.build_as
            if build_as is not None and build_as.user is not None:
                self._hand_over(folder, build_as.user)
        except OSError as e:
            raise DependencyError(f"cannot create a Python environment in {folder}: {e}") from None

    def _recreate_venv(self, folder: Path, plan: EnvironmentPlan) -> None:
        """(blocking) A fresh venv in `folder`, keeping this build's own files (its log, the
        constraints) and dropping whatever a failed installer left."""
        keep = {p: p.read_bytes() for p in folder.iterdir()
                if p.is_file() and not p.is_symlink() and p.name not in ("pyvenv.cfg", ".lock")}
        self._create_venv(folder, plan)
        for path, data in keep.items():
            path.write_bytes(data)

    @staticmethod
    def _hand_over(folder: Path, user: ReplicaUser) -> None:
        """Give the installers' user the parts of a new venv they write (site-packages, bin,
        include, share, conda's prefix, uv's .lock), until seal() takes them back. The venv's
        own folder, and the cache above it, stay the daemon's: what the daemon writes there (its
        log, the done file, constraints, lock files) can never be a symlink planted by the
        build's project code."""
        (folder / "include").mkdir(exist_ok=True)
        (folder / "share").mkdir(exist_ok=True)
        (folder / "conda").mkdir(exist_ok=True)
        (folder / ".lock").touch()
        for top in ("lib", "bin", "include", "share", "conda", ".lock"):
            path = folder / top
            for p in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
                os.chown(p, user.uid, user.gid, follow_symlinks=False)

    def _installer_env(self, plan: EnvironmentPlan) -> dict[str, str]:
        """installer_environment for this build: one running as another user gets the build's
        own HOME and TMPDIR (_lease)."""
        build_as = self.build_as
        if build_as is None or build_as.home is None or build_as.user is None:
            return installer_environment(os.environ)
        env = installer_environment(os.environ, home=str(build_as.home))
        env["TMPDIR"] = str(build_as.home / "tmp")
        env["USER"] = env["LOGNAME"] = build_as.user.name
        return env

    async def _conda(self, plan: EnvironmentPlan, folder: Path, build_log: Path) -> None:
        tool = next((t for t in ("micromamba", "mamba", "conda") if shutil.which(t)), None)
        conda_file = Path(plan.project_dir) / "conda-packages.txt"
        if tool is None:
            raise DependencyError(
                f"{conda_file} lists conda packages, but neither conda nor micromamba is on PATH "
                "(install micromamba or conda, or move the packages to requirements.txt)",
                deterministic=True,
            )
        self.say("installing conda packages", f"{tool} install --file conda-packages.txt")
        # conda makes its prefix itself, in a folder the installers' user owns (_hand_over)
        (folder / "conda").mkdir(exist_ok=True)
        prefix = folder / "conda" / "env"
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        await self._run(plan, [shutil.which(tool) or tool, "create", "-y", "-p", str(prefix),
                               f"python={version}", "--file", str(conda_file)],
                        build_log, "conda-packages.txt", self._installer_env(plan))
        site = prefix / "lib" / f"python{version}" / "site-packages"
        venv_site = folder / "lib" / f"python{version}" / "site-packages"
        # conda's packages: above the runtime's, below requirements.txt's (Cortex's order)
        (venv_site / "_cortexd_conda.pth").write_text(f"{site}\n")
        pth = venv_site / RUNTIME_PTH
        pth.write_text(f"import site; site.addsitedir({str(site)!r})\n" + pth.read_text())

    def _child_setup(self, plan: EnvironmentPlan):
        """An installer's preexec_fn: as the build's user (a leased uid: with RLIMIT_NPROC, so
        what it forks can be killed), files it makes readable by all (umask 022), and it dies
        with the daemon."""
        build_as = self.build_as
        user = build_as.user if build_as is not None else None
        leased = build_as is not None and build_as.leased
        return child_setup(user, sig=signal.SIGTERM, umask=0o022,
                           max_processes=BUILD_MAX_PROCESSES if leased else None)

    async def _run(self, plan: EnvironmentPlan, cmd: list[str], build_log: Path, what: str,
                   env: dict[str, str]) -> None:
        tail: deque[str] = deque(maxlen=400)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=plan.project_dir, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=self._child_setup(plan),
            )
        except OSError as e:
            raise DependencyError(f"cannot run {cmd[0]} to install {what}: {e}") from None
        try:
            # 0600, and no index token in it (uv takes pip.conf's URLs on its command line)
            with open(build_log, "a", encoding="utf-8", opener=_private) as out:  # noqa: ASYNC230 - a local log file
                out.write(f"$ {redact_credentials(' '.join(cmd))}\n")
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    line = redact_credentials(raw.decode("utf-8", "replace").rstrip())
                    tail.append(line)
                    out.write(line + "\n")
                    activity = (pip_activity(line) if what == "requirements.txt"
                                else uv_activity(line) if what == "uv" else None)
                    if activity:
                        self.say("installing requirements", activity)
            code = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if code == 0:
            return
        if what == "requirements.txt":
            raise RequirementsFailed(install_failure(list(tail), plan.lines, _python_version()), list(tail))
        last = "\n".join(line for line in list(tail)[-12:] if line.strip())
        raise DependencyError(f"{what} failed (exit code {code}) in {plan.project_dir}", detail=last,
                              deterministic=True)

    async def _capture(self, plan: EnvironmentPlan, cmd: list[str], seconds: float,
                       build_log: Path) -> tuple[bool | None, list[str]]:
        """Run one check (requirement_checks.py) as the installers run, within `seconds`: (its
        success, None when stopped at the deadline; its output, also in the build log)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, cwd=plan.project_dir, env=self._pip_env(plan), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True, preexec_fn=self._child_setup(plan),
            )
        except OSError as e:
            return False, [f"ERROR: cannot run {cmd[0]}: {e}"]
        output: deque[str] = deque(maxlen=2000)  # what a cause is read from is near the end

        async def read() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                output.append(redact_credentials(raw.decode("utf-8", "replace").rstrip()))
            await proc.wait()

        ok: bool | None = None
        try:
            await asyncio.wait_for(read(), seconds)
            ok = proc.returncode == 0
        except TimeoutError:
            pass  # what it said so far is kept: what it was doing when the time ran out
        finally:
            if proc.returncode is None:  # the deadline, or the build was cancelled: pip and its builds go
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        with open(build_log, "a", encoding="utf-8", opener=_private) as out:  # noqa: ASYNC230 - a local log file
            out.write(f"$ {redact_credentials(' '.join(cmd))}\n" + "".join(f"{line}\n" for line in output)
                      + ("(stopped: out of time)\n" if ok is None else ""))
        return ok, list(output)
