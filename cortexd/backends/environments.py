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

What goes into an environment is planned in environment_plan.py (make_plan: the inputs
and their digest); how it is installed, and by whom, in environment_build.py (uv first,
pip when uv cannot; a leased uid of the build's own for an isolated API; seal() before it
is published). Installers descend from the daemon, so the control API refuses them
(daemon/process_guard.py).

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
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cortexd.backends.environment_build import BuildAs, BuildUsers, EnvironmentBuild, seal
from cortexd.backends.environment_plan import Environment, EnvironmentPlan, make_plan, runtime_identity
from cortexd.core.nearest_pins import OnePass
from cortexd.errors import DependencyError
from cortexd.spec.model import APISpec

log = logging.getLogger("cortexd.environments")

DONE_FILE = "cortexd-environment.json"

Notify = Callable[[str, str], None]  # (message, api)


KEEP_UNUSED = 3  # environments no deployed API uses that the cache keeps (the newest by last use)


def environments_to_evict(last_used: dict[str, float], in_use: set[str], keep: int = KEEP_UNUSED) -> list[str]:
    """The digests to remove from the cache: those no deployed API uses (nor a build in
    progress), but the `keep` most recently used of them. Pure."""
    unused = sorted((d for d in last_used if d not in in_use), key=lambda d: last_used[d], reverse=True)
    return sorted(unused[keep:])


class ProjectEnvironments:
    """Plans, builds and hands out project environments; one per process backend.

    cache_dir: where environments live (settings.environments_dir); run_dependencies_sh:
    run a project's dependencies.sh on this host (opt-in); notify(message, api): notices for
    the user (pre-installed packages added, dependencies.sh skipped, a pin replaced by the
    nearest release that installs here: an API deployed with nearest pins, APISpec.nearest_pins).
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
        # what checking each line alone found, by the digest of the inputs with exact pins: a
        # `deploy --nearest-pins` after the report installs the nearest releases at once
        self._checked: dict[str, OnePass] = {}
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

    # -- planning -----------------------------------------------------------------------------
    def plan(self, spec: APISpec) -> EnvironmentPlan:
        """What the project of `spec` needs (blocking: reads the project's files)."""
        if self._runtime is None:
            self._runtime = runtime_identity()
        return make_plan(spec, self._runtime, self.run_dependencies_sh)

    # -- the entry points ------------------------------------------------------------------------
    def changes(self, api: str) -> tuple[str, ...]:
        """The nearest pins the environment of `api`'s current version installed instead of its
        requirements.txt's, in words (`get API`, the live view); () for none."""
        known = self._by_api.get(api)
        env = self._ready.get(known[1]) if known is not None else None
        return env.changes if env is not None else ()

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
        self._tell(plan, spec, plan.notices)
        env = await self.ensure(plan, spec.name, spec) if plan.needed else None
        if env is not None:  # the nearest pins it has, also when it was built before this daemon
            self._tell(plan, spec, env.changes)
        python = env.python if env is not None else None
        self._by_api[spec.name] = (spec.spec_hash, plan.digest if plan.needed else "", python)
        if plan.digest in self._fresh:  # a build: what it replaced may be garbage now
            self._fresh.discard(plan.digest)
            self._collecting = asyncio.ensure_future(self.collect_garbage())
        return python

    def _tell(self, plan: EnvironmentPlan, spec: APISpec, notices: tuple[str, ...]) -> None:
        """Each notice once per API and project (get's events, the live view)."""
        for notice in notices:
            if (plan.project_dir + spec.name, notice) not in self._noticed:
                self._noticed.add((plan.project_dir + spec.name, notice))
                self._notify(notice, spec.name)

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
        try:
            changes = tuple(json.loads((real / DONE_FILE).read_text()).get("changes", ()))
        except (OSError, ValueError, AttributeError):
            changes = ()
        return Environment(real, str(python), changes)

    def _remove_leftovers(self, digest: str, link: Path) -> None:
        current = link.resolve().name if link.is_symlink() else None
        for path in self.cache_dir.glob(f"{digest}-*"):
            if path.name != current:
                shutil.rmtree(path, ignore_errors=True)

    async def _make(self, plan: EnvironmentPlan, folder: Path, spec: APISpec | None = None) -> Environment:
        started = time.monotonic()
        build_as = await asyncio.to_thread(self._lease, spec)
        try:
            def say(phase: str, detail: str = "") -> None:
                self._say(plan.digest, phase, detail)

            build = EnvironmentBuild(self._python, build_as, say, self._host_pip_config, use_uv=self.use_uv)
            try:
                installer = await build.install(plan, folder, self._checked.get(plan.checks_key))
            finally:
                if build.checked is not None and build.checked.deterministic:
                    self._checked[plan.checks_key] = build.checked
        finally:
            # whatever the build left running is killed before the folder is sealed: a process
            # still holding a file open could otherwise write into the published environment
            await asyncio.shield(asyncio.to_thread(self._end, build_as))
        await asyncio.to_thread(seal, folder)
        (folder / DONE_FILE).write_text(json.dumps({
            "digest": plan.digest, "project": plan.project_dir, "installer": installer,
            "added": [a.distribution for a in plan.additions], "changes": list(build.changes),
            "seconds": round(time.monotonic() - started, 1), "created": time.time(),
        }, indent=1))
        log.info("environment %s for %s ready in %.1fs", plan.digest, plan.project_dir,
                 time.monotonic() - started)
        return Environment(folder, str(folder / "bin" / "python"), build.changes)

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

