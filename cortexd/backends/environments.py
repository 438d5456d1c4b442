"""Per-project Python environments for the process backend (I/O).

A project's requirements.txt, the Cortex 0.23 pre-installed packages its code
imports without listing them (core/preinstalled.py), conda-packages.txt and, when
opted in, dependencies.sh become one environment, made once per digest of its
inputs (those files, the project's pip.conf, the Python, cortexd and the runtime's
installed packages) and cached under the daemon's home (settings.environments_dir):
all replicas of every API of the project share it, and the next `up` with unchanged
inputs finds it and runs no pip at all. A project that needs nothing runs on the
daemon's interpreter as before.

The layering: an environment is a venv (made without pip: fast) whose
site-packages holds only what the project needs, with a .pth that appends the
runtime's own site-packages after it. A replica runs on the venv's python, so the
project's pins come first on sys.path and win over the runtime's copies, and
everything else (aiohttp, numpy, the predictor runtime's dependencies) is the
runtime's own. pip installs with `pip --python <venv python>`: it sees the
runtime's packages as installed, reuses those that satisfy the requirements and
puts into the venv only what differs (a pinned six==1.16.0 beside the runtime's
1.17.0; "Not uninstalling six ... outside environment").

uv installs first when it can, being 10-20x faster (numbers in the issue note).
`uv pip install` does not see packages outside the target environment, so left
alone it would re-resolve the whole closure into the venv (python-dateutil 4.0.0
over the runtime's 2.9.0.post0, which botocore needs <3). So uv gets only the
lines the runtime does not satisfy already, and the runtime's versions as
constraints for everything the project does not name: it then picks what pip
would, and what it copies into the venv is the runtime's own versions. pip
installs instead when uv is absent, when a pip setting has no uv equivalent, or
when uv fails (a pin that needs a newer runtime package, a bad line): pip's
answer is the one reported.

A build runs project code (a setup.py of an sdist, a local `./pkg`, dependencies.sh),
so pip, uv, conda and dependencies.sh run under the replicas' rules. A root daemon whose
API is isolated builds as a fresh uid of the build's own (replica_uids.py: shared with no
replica and no other build), with a HOME of its own for pip's and uv's caches that goes
with the build, so no API's code can plant anything a later build of another project
would run; the parts of the venv the installers write are that uid's while it runs
(_hand_over), the cache and the venv's own folder stay the daemon's, and before the
environment is published everything the build left running is killed and the folder is
sealed: root-owned, not writable by group or others, no set-id bits (_seal), so a replica
can load it and never change it. Installers get installer_environment(): what replicas
get plus the installers' own settings of the daemon's environment (PIP_*, proxies, HOME
and so the user's pip.conf), never CORTEXD_* or the rest of what the daemon holds. They descend from the daemon, so the
control API refuses them (daemon/process_guard.py). A project `pip.conf` (Cortex's way to a
private index) is layered on top as PIP_* variables, which pip ranks above its
configuration files. uv reads none of these: it gets the same merged settings
(pip_settings.merged_pip_settings, which also carries them into Docker builds) as
options (core/requirements.uv_options).

Builds are safe against each other: one task per digest in a daemon, an flock per
digest across daemons sharing a cache, and the environment is built in a folder of
its own and published by atomically renaming a symlink onto `<digest>`, so a
half-built environment is never used; a failed or interrupted build leaves only a
folder that the next build of that digest removes. The cache keeps the environments
the deployed APIs use and the KEEP_UNUSED newest others (by last use): the rest are
removed at start and after each build (collect_garbage).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import venv
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cortexd import __version__
from cortexd.backends.isolation import ReplicaUser, child_setup, inherited_environment
from cortexd.backends.pip_settings import merged_pip_settings
from cortexd.core.preinstalled import Addition, imported_modules, preinstalled_additions
from cortexd.core.requirements import (
    PREINSTALLED_FILE,
    RequirementLine,
    RequirementTree,
    canonical,
    environment_digest,
    install_failure,
    pip_activity,
    requirement_lines,
    requirement_names,
    requirement_tree,
    unsatisfied,
    uv_activity,
    uv_options,
)
from cortexd.credentials import redact_credentials
from cortexd.errors import DependencyError
from cortexd.project_files import local_requirement_files, project_reader
from cortexd.spec.model import APISpec

log = logging.getLogger("cortexd.environments")

LAYOUT = "2"  # bump when the layout of an environment changes: old ones are not reused
RUNTIME_PTH = "_cortexd_runtime.pth"
DONE_FILE = "cortexd-environment.json"
MAX_SCANNED_FILES = 5000
MAX_SCANNED_BYTES = 2 * 2**20
SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages"}
# pip options that would send the install somewhere else than the environment
_PIP_VARS_DROPPED = ("PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER", "PIP_PYTHON", "PIP_REQUIRE_VIRTUALENV")
# what installers read from the environment besides what replicas get (installer_environment)
_INSTALLER_PREFIXES = ("PIP_", "UV_", "CONDA", "MAMBA", "PYTHONHTTPSVERIFY")
_INSTALLER_VARS = frozenset({"HOME", "USER", "LOGNAME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
                             "XDG_CONFIG_DIRS", "CURL_CA_BUNDLE", "NETRC"})
_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "no_proxy", "all_proxy"})
# pip.conf keys naming local files: relative to the project folder
_PATH_KEYS = ("cert", "client-cert", "find-links", "constraint", "requirement")

Notify = Callable[[str, str], None]  # (message, api)


@dataclass(frozen=True)
class EnvironmentPlan:
    """Everything that goes into one project's environment (read from its folder)."""

    project_dir: str
    digest: str
    requirements: bytes | None  # requirements.txt
    lines: tuple[RequirementLine, ...]
    additions: tuple[Addition, ...]
    conda_packages: bytes | None
    dependencies_sh: bytes | None  # only when running it is opted in
    pip_env: dict[str, str] = field(default_factory=dict)  # the project pip.conf as PIP_* variables
    notices: tuple[str, ...] = ()

    @property
    def needed(self) -> bool:
        return bool(self.requirements and self.lines) or bool(self.additions) or \
            self.conda_packages is not None or self.dependencies_sh is not None


@dataclass(frozen=True)
class Environment:
    path: Path  # the environment's real folder
    python: str  # its interpreter


# -- reading a project (blocking; run in a thread) ------------------------------------------


def python_sources(root: Path) -> dict[str, str]:
    """{relative path: text} of the project's .py files (no venvs, caches or hidden folders)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d not in SKIPPED_DIRS
            and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
        )
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            try:
                if os.path.getsize(path) > MAX_SCANNED_BYTES:
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    out[os.path.relpath(path, root)] = f.read()
            except OSError:
                continue
            if len(out) >= MAX_SCANNED_FILES:
                return out
    return out


def own_modules(relative_paths: list[str]) -> set[str]:
    """Top-level names a project defines: each .py file's name and each folder above one."""
    names: set[str] = set()
    for rel in relative_paths:
        parts = Path(rel).parts
        names.update(parts[:-1])
        names.add(Path(parts[-1]).stem)
    return names


def project_imports(spec: APISpec) -> tuple[dict[str, set[str]], set[str]]:
    """({project file: modules it imports}, the project's own top-level names) for the
    pre-installed scan; the python_path folder counts when it lies outside the project.
    Shared by both backends (images.py: the Docker requirements layer)."""
    project = Path(spec.project_dir)
    sources = python_sources(project)
    python_path = Path(spec.predictor.python_path)
    if python_path != project and python_path.is_dir() and project not in python_path.parents:
        sources.update({f"{python_path.name}/{k}": v for k, v in python_sources(python_path).items()})
        own = own_modules(list(python_sources(python_path))) | own_modules(list(sources))
    else:
        own = own_modules(list(sources))
    imports = {f: imported_modules(text) for f, text in sources.items()}
    if uses_s3(spec):  # the runtime reads s3:// models through boto3, whatever the code imports
        imports["cortex.yaml (s3:// model paths)"] = {"boto3"}
    return imports, own


def uses_s3(spec: APISpec) -> bool:
    """Whether any of the API's models is read from S3 (model_path, models.paths, models.dir)."""
    p = spec.predictor
    paths = [p.model_path, *(m.path for m in (p.models.paths if p.models else ())),
             p.models.dir if p.models else None]
    return any(path and path.startswith("s3://") for path in paths)


def runtime_has(module: str) -> bool:
    """Whether the runtime's environment (this interpreter's) provides a top-level module."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        return False


def runtime_site_dirs() -> list[str]:
    """The runtime's site-packages folders, in sys.path order."""
    return [p for p in dict.fromkeys(sys.path)
            if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


def runtime_identity() -> str:
    """cortexd, the Python and every installed distribution of the runtime's environment."""
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                    if d.metadata and d.metadata["Name"]}, key=str.lower)
    return "\n".join([
        f"cortexd {__version__}", f"layout {LAYOUT}", sys.version, sys.implementation.cache_tag or "",
        platform.machine(), os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        *runtime_site_dirs(), *dists,
    ])


def runtime_pins(versions: bool = False) -> list[tuple[str, str]]:
    """(canonical name, "name==version", or the version alone) of the runtime's distributions
    that an index can serve (editable and local installs, cortexd's own among them, left out)."""
    out = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"] if d.metadata else None
        if not name or d.read_text("direct_url.json"):
            continue
        out.setdefault(canonical(name), d.version if versions else f"{name}=={d.version}")
    return sorted(out.items())


def uv_binary() -> str | None:
    """uv's executable: the `uv` wheel's (a dependency of cortexd), else one on PATH, else None."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def project_pip_env(path: Path) -> tuple[dict[str, str], str | None]:
    """A project pip.conf's [global] and [install] settings as PIP_* variables, or a problem."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(path.read_text())
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        return {}, f"{path} cannot be read as a pip configuration file ({e}); pip runs without it"
    env: dict[str, str] = {}
    for section in ("global", "install"):
        if not parser.has_section(section):
            continue
        for key, value in parser.items(section):
            values = value.split()
            if key in _PATH_KEYS:
                values = [v if "://" in v or os.path.isabs(v) else str(path.parent / v) for v in values]
            env["PIP_" + key.upper().replace("-", "_")] = " ".join(values)
    return env, None


def installer_environment(base: dict[str, str] | os._Environ, home: str | None = None) -> dict[str, str]:
    """The environment pip, uv, conda and dependencies.sh run with: a build runs project code
    (a setup.py, a local `-e ./pkg`), so it gets the replica's rules (process.py
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


KEEP_UNUSED = 3  # environments no deployed API uses that the cache keeps (the newest by last use)


def environments_to_evict(last_used: dict[str, float], in_use: set[str], keep: int = KEEP_UNUSED) -> list[str]:
    """The digests to remove from the cache: those no deployed API uses (nor a build in
    progress), but the `keep` most recently used of them. Pure."""
    unused = sorted((d for d in last_used if d not in in_use), key=lambda d: last_used[d], reverse=True)
    return sorted(unused[keep:])


def _included_files(text: str, project: Path) -> dict[str, bytes]:
    """Files a requirements.txt includes with -r / -c (their content is part of the digest)."""
    out = {}
    for line in requirement_lines(text):
        parts = line.text.split(None, 1)
        if len(parts) == 2 and parts[0] in ("-r", "--requirement", "-c", "--constraint"):
            p = project / parts[1]
            with contextlib.suppress(OSError):
                out[f"included:{parts[1]}"] = p.read_bytes()
    return out


def _requirement_tree(project: Path) -> RequirementTree:
    """requirements.txt and its -r / -c includes, recursively (an unreadable file counts as absent:
    pip, which reads it next, says why)."""
    read = project_reader(project)

    def tolerant(rel: str) -> bytes | None:
        try:
            return read(rel)
        except OSError:
            return None

    return requirement_tree(tolerant)


def _local_signatures(project: Path, local: Iterable[str]) -> dict[str, str]:
    """What identifies the local paths a project installs from (`./wheels/x.whl`, `-e ./pkg`): each
    file's size and mtime, so an edited local package builds a new environment (cheap: not read)."""
    out = {}
    for rel in local:
        try:
            found = local_requirement_files(project, rel) or {}
            out[f"local:{rel}"] = "\n".join(
                f"{name} {st.st_size} {st.st_mtime_ns}" for name, st in ((n, p.stat()) for n, p in found.items()))
        except OSError:
            out[f"local:{rel}"] = "unreadable"
    return out


class ProjectEnvironments:
    """Plans, builds and hands out project environments; one per process backend.

    cache_dir: where environments live (settings.environments_dir); run_dependencies_sh:
    run a project's dependencies.sh on this host (opt-in); notify(message, api): notices
    for the user (pre-installed packages added, dependencies.sh skipped...).
    """

    def __init__(self, cache_dir: Path | str, *, run_dependencies_sh: bool = False,
                 notify: Notify | None = None, python: str = sys.executable, use_uv: bool = True):
        # python: runs pip and makes the venvs (the runtime's interpreter)
        self.cache_dir = Path(os.path.abspath(cache_dir))
        self.run_dependencies_sh = run_dependencies_sh
        self._notify = notify or (lambda message, api: log.warning("[%s] %s", api, message))
        self._python = python
        self._runtime: str | None = None
        self._builds: dict[str, asyncio.Task] = {}
        self._ready: dict[str, Environment] = {}
        self._failed: dict[str, DependencyError] = {}  # digests whose install fails as it is
        self._activity: dict[str, tuple[str, str]] = {}  # api -> (phase, detail)
        self._noticed: set[tuple[str, str]] = set()
        # api -> (spec hash, plan digest, interpreter (None: the runtime's)): one entry per API,
        # however many versions of it were saved
        self._by_api: dict[str, tuple[str, str, str | None]] = {}
        # who builds run as (the process backend sets itself); None: the daemon's own user
        self.build_users: BuildUsers | None = None
        self._fresh: set[str] = set()  # digests built (not found in the cache) by this daemon
        self._collecting: asyncio.Future | None = None
        self._held: dict[str, int] = {}  # digest -> fd of its lock, held shared while in use
        self._waiting: dict[str, set[str]] = {}  # digest -> apis waiting for its build
        self._pip_config: str | None = None
        self.use_uv = use_uv
        self._building_as: dict[str, BuildAs] = {}  # digest -> who its build in progress runs as

    # -- planning -----------------------------------------------------------------------------
    def plan(self, spec: APISpec) -> EnvironmentPlan:
        """What the project of `spec` needs (blocking: reads the project's files)."""
        project = Path(spec.project_dir)
        notices: list[str] = []
        req_path = project / "requirements.txt"
        requirements = req_path.read_bytes() if req_path.is_file() else None
        req_text = requirements.decode("utf-8", "replace") if requirements else ""
        lines = tuple(requirement_lines(req_text))
        tree = _requirement_tree(project)

        imports, own = project_imports(spec)
        additions = tuple(preinstalled_additions(
            imports, spec.predictor.type, requirement_names(tree.lines), runtime_has, own,
        ))
        notices.extend(a.notice for a in additions)

        conda_path = project / "conda-packages.txt"
        conda = conda_path.read_bytes() if conda_path.is_file() else None
        deps_path = project / "dependencies.sh"
        deps = None
        if deps_path.is_file():
            if self.run_dependencies_sh:
                deps = deps_path.read_bytes()
            else:
                notices.append(
                    f"dependencies.sh ({deps_path}) is not run on the process backend: it would change "
                    "this host (apt-get ...). Run it yourself, or opt in with `cortexd up "
                    "--run-dependencies-sh` (CORTEXD_RUN_DEPENDENCIES_SH=1); the Docker backend runs it "
                    "in the image"
                )
        pip_env: dict[str, str] = {}
        pip_conf = project / "pip.conf"
        pip_conf_bytes = b""
        if pip_conf.is_file():
            pip_env, problem = project_pip_env(pip_conf)
            if problem:
                notices.append(problem)
            else:
                pip_conf_bytes = pip_conf.read_bytes()
        if self._runtime is None:
            self._runtime = runtime_identity()
        parts: dict[str, bytes | str] = {
            "requirements.txt": requirements or b"",
            # one level of includes, wherever they are (pip reads ../common.txt on this host), then
            # every include inside the project to any depth (the tree the Docker layer copies too)
            **_included_files(req_text, project),
            **{f"tree:{name}": data for name, data in tree.files.items()},
            **_local_signatures(project, tree.local),
            "preinstalled": "\n".join(a.distribution for a in additions),
            "conda-packages.txt": conda or b"",
            "dependencies.sh": deps or b"",
            "pip.conf": pip_conf_bytes,
            "runtime": self._runtime,
        }
        return EnvironmentPlan(
            project_dir=str(project), digest=environment_digest(parts), requirements=requirements,
            lines=lines, additions=additions, conda_packages=conda, dependencies_sh=deps,
            pip_env=pip_env, notices=tuple(notices),
        )

    # -- the entry points ------------------------------------------------------------------------
    def activity(self, api: str) -> tuple[str, str] | None:
        """(phase, detail) of the environment build an API waits for, e.g.
        ("installing requirements", "collecting six==1.16.0 (requirements.txt line 2)")."""
        return self._activity.get(api)

    async def interpreter_for(self, spec: APISpec) -> str | None:
        """The Python a replica of `spec` runs on, building its project's environment if needed;
        None when the project needs none (the backend's own interpreter then).

        Raises DependencyError (the API shows `error`) when the environment cannot be made.
        """
        known = self._by_api.get(spec.name)
        if known is not None and known[0] == spec.spec_hash:
            return known[2]
        plan = await self._plan_off_loop(spec)
        for notice in plan.notices:
            if (plan.project_dir + spec.name, notice) not in self._noticed:
                self._noticed.add((plan.project_dir + spec.name, notice))
                self._notify(notice, spec.name)
        python = (await self.ensure(plan, spec.name, spec)).python if plan.needed else None
        self._by_api[spec.name] = (spec.spec_hash, plan.digest if plan.needed else "", python)
        if plan.digest in self._fresh:  # a build: what it replaced may be garbage now
            self._fresh.discard(plan.digest)
            self._collecting = asyncio.ensure_future(self.collect_garbage())
        return python

    async def _plan_off_loop(self, spec: APISpec) -> EnvironmentPlan:
        try:
            return await asyncio.to_thread(self.plan, spec)
        except OSError as e:  # an unreadable requirements.txt, pip.conf ...
            raise DependencyError(f"cannot read the dependency files of {spec.project_dir}: "
                                  f"{e.strerror or e}: {e.filename}") from None

    async def collect_garbage(self, deployed: list[APISpec] | None = None) -> list[str]:
        """Remove the environments no deployed API uses but the KEEP_UNUSED newest by last use
        (environments_to_evict); the digests removed. `deployed`: the daemon's APIs at start
        (planned here); after that, what interpreter_for resolved per API is what is in use."""
        for spec in deployed or ():
            with contextlib.suppress(DependencyError):
                plan = await self._plan_off_loop(spec)
                if plan.needed:
                    known = self._by_api.get(spec.name)
                    if known is None or known[1] != plan.digest:
                        self._by_api[spec.name] = ("", plan.digest, None)  # to resolve later
        in_use = {digest for _, digest, _ in self._by_api.values() if digest}
        in_use |= {d for d, task in self._builds.items() if not task.done()}
        self._release(d for d in self._held if d not in in_use)  # ours to remove, too
        removed = await asyncio.to_thread(self._evict, in_use)
        for digest in removed:
            self._ready.pop(digest, None)
            self._builds.pop(digest, None)
            self._waiting.pop(digest, None)
        return removed

    def _evict(self, in_use: set[str]) -> list[str]:
        """(blocking) environments_to_evict over the cache folder; each removed under its build
        lock, so a build of it by another daemon sharing the cache is never cut."""
        last_used: dict[str, float] = {}
        try:
            entries = list(self.cache_dir.iterdir())
        except OSError:
            return []
        for path in entries:
            if path.is_symlink() and not path.name.startswith("."):
                with contextlib.suppress(OSError):
                    last_used[path.name] = path.lstat().st_mtime
        # the shared installer HOME of layout 1 (pip's and uv's caches of every build, writable by
        # the replicas' user): never read again, and what a build planted there goes with it
        legacy = self.cache_dir / ".home"
        if legacy.is_dir() and not legacy.is_symlink():
            shutil.rmtree(legacy, ignore_errors=True)
        removed = []
        for digest in environments_to_evict(last_used, in_use):
            try:
                fd = os.open(self.cache_dir / f"{digest}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "rb+") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    (self.cache_dir / digest).unlink()
                    for folder in self.cache_dir.glob(f"{digest}-*"):
                        shutil.rmtree(folder, ignore_errors=True)
                    (self.cache_dir / f"{digest}.lock").unlink(missing_ok=True)
            except OSError:  # BlockingIOError: being built; anything else: left for next time
                continue
            removed.append(digest)
        if removed:
            log.info("removed %d unused environment(s) from %s", len(removed), self.cache_dir)
        return removed

    @staticmethod
    def _touch(link: Path) -> None:
        """Record a use of an environment (the last-use time the garbage collection sorts by)."""
        with contextlib.suppress(OSError):
            os.utime(link, follow_symlinks=False)

    async def ensure(self, plan: EnvironmentPlan, api: str, spec: APISpec | None = None) -> Environment:
        """The environment of `plan`, built when the cache has none (spec: the API that asks,
        which decides who the build runs as: BuildUsers)."""
        if plan.digest in self._ready:
            self._touch(self.cache_dir / plan.digest)
            self._hold(plan.digest)
            return self._ready[plan.digest]
        if plan.digest in self._failed:
            raise self._failed[plan.digest]
        task = self._builds.get(plan.digest)
        if task is None or task.done():
            task = asyncio.ensure_future(self._build(plan, spec))
            self._builds[plan.digest] = task
        self._watchers(plan.digest).add(api)
        try:
            env = await asyncio.shield(task)
        except DependencyError as e:
            if getattr(e, "deterministic", False):
                self._failed[plan.digest] = e
            raise
        finally:
            self._watchers(plan.digest).discard(api)
            self._activity.pop(api, None)
        self._ready[plan.digest] = env
        self._touch(self.cache_dir / plan.digest)
        self._hold(plan.digest)
        return env

    def _hold(self, digest: str) -> None:
        """Hold the digest's lock shared while this daemon uses the environment, so that no
        daemon sharing the cache removes it (_evict takes it exclusively, without waiting)."""
        if digest in self._held:
            return
        try:
            fd = os.open(self.cache_dir / f"{digest}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._held[digest] = fd

    def _release(self, digests) -> None:
        for digest in list(digests):
            fd = self._held.pop(digest, None)
            if fd is not None:
                os.close(fd)

    async def close(self) -> None:
        """Stop builds in progress (their pip is killed; their folders are left for cleanup)."""
        for task in self._builds.values():
            task.cancel()
        if self._builds:
            await asyncio.gather(*self._builds.values(), return_exceptions=True)
        if self._collecting is not None:
            self._collecting.cancel()
            await asyncio.gather(self._collecting, return_exceptions=True)
        self._release(self._held)

    # -- building --------------------------------------------------------------------------------
    def _watchers(self, digest: str) -> set[str]:
        return self._waiting.setdefault(digest, set())

    def _say(self, digest: str, phase: str, detail: str = "") -> None:
        for api in self._watchers(digest):
            self._activity[api] = (phase, detail)

    async def _build(self, plan: EnvironmentPlan, spec: APISpec | None = None) -> Environment:
        link = self.cache_dir / plan.digest
        existing = self._published(link)
        if existing is not None:
            return existing
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(self.cache_dir / f"{plan.digest}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise DependencyError(f"cannot create the environment cache {self.cache_dir}: {e}") from None
        with os.fdopen(lock_fd, "rb+") as lock:
            waited = False
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # published meanwhile: its users hold the lock shared (_hold), so it may
                    # never be free again
                    existing = self._published(link)
                    if existing is not None:
                        return existing
                    if not waited:
                        self._say(plan.digest, "installing requirements",
                                  "waiting for another build of the same environment")
                        waited = True
                    await asyncio.sleep(0.2)
            try:
                existing = self._published(link)  # built by whoever held the lock
                if existing is not None:
                    return existing
                await asyncio.to_thread(self._remove_leftovers, plan.digest, link)
                folder = self.cache_dir / f"{plan.digest}-{secrets.token_hex(4)}"
                try:
                    env = await self._make(plan, folder, spec)
                except BaseException:
                    # off the loop (a half-built venv can be large); shielded, so a cancelled
                    # build still removes its folder
                    await asyncio.shield(asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True))
                    raise
                tmp_link = self.cache_dir / f".{plan.digest}.{secrets.token_hex(4)}.link"
                os.symlink(folder.name, tmp_link)
                os.replace(tmp_link, link)  # atomic: the environment appears complete or not at all
                self._fresh.add(plan.digest)
                return env
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _published(link: Path) -> Environment | None:
        if not link.is_symlink():
            return None
        real = link.resolve()
        python = real / "bin" / "python"
        if not (real / DONE_FILE).is_file() or not python.exists():
            return None
        return Environment(real, str(python))

    def _remove_leftovers(self, digest: str, link: Path) -> None:
        current = link.resolve().name if link.is_symlink() else None
        for path in self.cache_dir.glob(f"{digest}-*"):
            if path.name != current:
                shutil.rmtree(path, ignore_errors=True)

    async def _make(self, plan: EnvironmentPlan, folder: Path, spec: APISpec | None = None) -> Environment:
        started = time.monotonic()
        self._building_as[plan.digest] = await asyncio.to_thread(self._lease, spec)
        try:
            installer = await self._install(plan, folder)
        finally:
            # whatever the build left running is killed before the folder is sealed: a process
            # still holding a file open could otherwise write into the published environment
            build_as = self._building_as.pop(plan.digest)
            await asyncio.shield(asyncio.to_thread(self._end, build_as))
        await asyncio.to_thread(seal, folder)
        (folder / DONE_FILE).write_text(json.dumps({
            "digest": plan.digest, "project": plan.project_dir, "installer": installer,
            "added": [a.distribution for a in plan.additions],
            "seconds": round(time.monotonic() - started, 1), "created": time.time(),
        }, indent=1))
        log.info("environment %s for %s ready in %.1fs", plan.digest, plan.project_dir,
                 time.monotonic() - started)
        return Environment(folder, str(folder / "bin" / "python"))

    async def _install(self, plan: EnvironmentPlan, folder: Path) -> str | None:
        """Everything the build runs, in order; the installer that took requirements.txt."""
        self._say(plan.digest, "installing requirements", "creating the environment")
        await asyncio.to_thread(self._create_venv, folder, plan)
        python = str(folder / "bin" / "python")
        build_log = folder / "cortexd-install.log"
        if plan.dependencies_sh is not None:
            self._say(plan.digest, "running dependencies.sh", "")
            await self._run(plan, ["bash", str(Path(plan.project_dir) / "dependencies.sh")], build_log,
                            "dependencies.sh", self._installer_env(plan))
        if plan.conda_packages is not None:
            await self._conda(plan, folder, build_log)
        pip_files = []
        if plan.requirements and plan.lines:
            pip_files += ["-r", str(Path(plan.project_dir) / "requirements.txt")]
        if plan.additions:
            added = folder / PREINSTALLED_FILE
            added.write_text("".join(f"{a.distribution}\n" for a in plan.additions))
            pip_files += ["-r", str(added)]
        installer = None
        if pip_files:
            env = self._installer_env(plan)
            env.update(plan.pip_env)
            installer = "uv" if await self._install_with_uv(plan, folder, pip_files, env, build_log) else "pip"
        if installer == "pip":
            env.update({"PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            cmd = [self._python, "-m", "pip", "--python", python, "install", "--progress-bar", "off",
                   "--no-warn-script-location", *pip_files]
            self._say(plan.digest, "installing requirements", "starting pip")
            await self._run(plan, cmd, build_log, "requirements.txt", env)
        return installer

    async def _install_with_uv(self, plan: EnvironmentPlan, folder: Path, pip_files: list[str],
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
        options = uv_options(merged_pip_settings(await self._host_pip_config(), env))
        if options is None:
            return False  # a pip setting uv cannot honour
        args, uv_env = options
        wanted = unsatisfied(plan.lines, dict(runtime_pins(versions=True)), plan.project_dir)
        wanted += [a.distribution for a in plan.additions]
        if not wanted:
            self._say(plan.digest, "installing requirements", "the runtime has every requirement")
            return True  # nothing to install: the runtime satisfies every line
        # what the project asks for is free; everything else stays at the runtime's version
        named = {canonical(line) for line in wanted if not line.startswith("-")}
        constraints = folder / "cortexd-runtime-constraints.txt"
        constraints.write_text("".join(f"{pin}\n" for name, pin in runtime_pins() if name not in named))
        requirements = folder / "cortexd-requirements-uv.txt"
        requirements.write_text("".join(f"{line}\n" for line in wanted))
        cmd = [uv, "pip", "install", "--python", str(folder / "bin" / "python"), "--color", "never",
               "-r", str(requirements), "--constraint", str(constraints), *args]
        self._say(plan.digest, "installing requirements", "resolving with uv")
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

    async def _host_pip_config(self) -> str:
        """`pip config list` of this host (once): the settings pip would read, for uv."""
        if self._pip_config is None:
            def read() -> str:
                try:
                    return subprocess.run([self._python, "-m", "pip", "config", "list"], capture_output=True,
                                          text=True, timeout=60, check=False).stdout
                except (OSError, subprocess.SubprocessError):
                    return ""
            self._pip_config = await asyncio.to_thread(read)
        return self._pip_config

    def _create_venv(self, folder: Path, plan: EnvironmentPlan) -> None:
        try:
            venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(folder)
            site = folder / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
            # the runtime's packages come after the project's (site.addsitedir also runs their .pth files)
            lines = [f"import site; site.addsitedir({d!r})" for d in runtime_site_dirs()]
            (site / RUNTIME_PTH).write_text("\n".join(lines) + "\n")
            build_as = self._building_as.get(plan.digest)
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

    def _lease(self, spec: APISpec | None) -> BuildAs:
        """(blocking) Who the build runs as (BuildUsers) and, for another user, a HOME of the
        build's own (pip's and uv's caches, TMPDIR): never shared with another build or API."""
        user = None
        if self.build_users is not None and spec is not None:
            user = self.build_users.lease_build_user(spec, self._python)
        if user is None or not user.drops(os.getuid()):
            return BuildAs(None, None, leased=False)
        leased = self.build_users is not None and self.build_users.leases(user)
        try:
            homes = self.cache_dir / ".builds"
            homes.mkdir(mode=0o711, parents=True, exist_ok=True)
            home = homes / secrets.token_hex(6)
            home.mkdir(mode=0o700)
            (home / "tmp").mkdir(mode=0o700)
            for path in (home, home / "tmp"):
                os.chown(path, user.uid, user.gid)
        except OSError as e:
            if leased and self.build_users is not None:
                self.build_users.end_build(user)
            raise DependencyError(f"cannot make a home for the build in {self.cache_dir}: {e}") from None
        return BuildAs(user, home, leased)

    def _end(self, build_as: BuildAs) -> None:
        """(blocking) After a build: its processes killed and its uid given back (BuildUsers),
        its HOME (caches) removed."""
        if build_as.leased and self.build_users is not None:
            self.build_users.end_build(build_as.user)
        if build_as.home is not None:
            shutil.rmtree(build_as.home, ignore_errors=True)

    def _installer_env(self, plan: EnvironmentPlan) -> dict[str, str]:
        """installer_environment for this build: one running as another user gets the build's
        own HOME and TMPDIR (_lease)."""
        build_as = self._building_as.get(plan.digest)
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
        self._say(plan.digest, "installing conda packages", f"{tool} install --file conda-packages.txt")
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
        build_as = self._building_as.get(plan.digest)
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
                        self._say(plan.digest, "installing requirements", activity)
            code = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if code == 0:
            return
        if what == "requirements.txt":
            failure = install_failure(list(tail), plan.lines, f"{sys.version_info[0]}.{sys.version_info[1]}")
            raise DependencyError(failure.summary, detail=failure.detail, deterministic=failure.deterministic)
        last = "\n".join(line for line in list(tail)[-12:] if line.strip())
        raise DependencyError(f"{what} failed (exit code {code}) in {plan.project_dir}", detail=last,
                              deterministic=True)
