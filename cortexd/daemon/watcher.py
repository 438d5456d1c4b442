"""Watches project folders (watchdog) and tells the daemon, debounced, that something changed.

watchdog calls back on its own thread; events are handed to the asyncio loop with
call_soon_threadsafe and coalesced: editors write temp files and rename them, so
one save is several events, and the daemon reloads once `debounce` seconds after
the last relevant one, but never later than `max_wait` seconds after the first one
of the burst (Burst): saves that never pause (a formatter on save, a sync tool, a
training run writing beside the code) still get new code served every `max_wait`,
as watchexec and notify's debouncer act during a continuous stream of events
instead of waiting for it to end. Irrelevant paths are dropped here by the project-file rules
that `cortexd build` uses too (cortexd/project_files.py: dot files and dot folders,
__pycache__ and bytecode, the project's `.cortexignore`), kept dot files aside
(`.env`, which replicas read, and `.cortexignore`, which decides what counts), plus
the watcher's own extra: editor temp files.

project_files() + api_files() + api_digest() are the other half of hot reload: a
digest of a project's files that the daemon folds into each API's spec hash, so an
edit to predictor code rolls the APIs that use it, and only those. What counts:
the sources (cortex.yaml, .env, .cortexignore, dependency files, Python files)
always, other files exactly when the version shipped with them (`shipped`: the
project's files when it was deployed), whatever their name: a shipped `lookup.db`
rolls the API when it changes, and what a running predictor creates later (a log,
a sqlite database, a cache) never does. Model folders inside the project are left
out (the runtime polls them for new versions, as it does folders outside).
`.cortexignore` is read again on each look, so one written after the deploy applies;
one that cannot be read is said as a warning (cortexignore_warning) and not applied.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

import pathspec
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from cortexd.project_files import (
    CORTEXIGNORE,
    EDITOR_TEMP_PATTERNS,
    CortexIgnoreUnreadable,
    ProjectFilter,
    read_cortexignore,
)

KEPT_DOTFILES = frozenset({CORTEXIGNORE, ".env"})
SMALL_FILE = 1 << 20  # hashed by content below this size, by size+mtime above
# files that always count, new or not: what defines a version (Cortex's project files)
SOURCE_NAMES = {"cortex.yaml", "cortex.yml", ".env", CORTEXIGNORE, "requirements.txt", "dependencies.sh",
                "conda-packages.txt"}
SOURCE_SUFFIXES = (".py",)
_EDITOR_TEMP = pathspec.GitIgnoreSpec.from_lines(EDITOR_TEMP_PATTERNS)


def is_source(rel: str) -> bool:
    """A file that defines a version whether or not it existed when the version started."""
    name = os.path.basename(rel)
    return name in SOURCE_NAMES or name.endswith(SOURCE_SUFFIXES)


def watch_rules(ignored: pathspec.PathSpec | None) -> ProjectFilter:
    """The project-file rules as the watcher applies them (cortex.yaml and .env count here)."""
    return ProjectFilter(ignored=ignored, keep_dotfiles=KEPT_DOTFILES, extra=_EDITOR_TEMP)


def read_watch_rules(project_dir: str | Path) -> ProjectFilter:
    """watch_rules() with the project's .cortexignore; an unreadable one is not applied (the
    daemon says so through cortexignore_warning)."""
    try:
        return watch_rules(read_cortexignore(project_dir))
    except CortexIgnoreUnreadable:
        return watch_rules(None)


def cortexignore_warning(project_dir: str | Path) -> str | None:
    """What to tell the user when the project's .cortexignore cannot be read (None: it can)."""
    try:
        read_cortexignore(project_dir)
    except CortexIgnoreUnreadable as e:
        return (f"{e}; its patterns are not applied, so every file of the project counts for "
                "hot reload (fix the file's permissions or encoding)")
    return None


@functools.lru_cache(maxsize=64)
def _gitignore(patterns: tuple[str, ...]) -> pathspec.PathSpec:
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def is_ignored(rel: str, patterns: Iterable[str] | ProjectFilter = ()) -> bool:
    """Whether a path relative to the project folder is irrelevant to the APIs (`patterns`:
    the lines of a .cortexignore, or the rules already read)."""
    if isinstance(patterns, ProjectFilter):
        rules = patterns
    else:
        lines = tuple(patterns)
        rules = watch_rules(_gitignore(lines) if lines else None)
    rel = Path(rel).as_posix()
    return rel in ("", ".") or rules.excludes(rel)


def _inside(path: str, folders: Collection[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def project_files(project_dir: str, *, shipped: Collection[str] | None = None,
                  model_dirs: Collection[str] = ()) -> dict[str, str]:
    """{absolute path: digest} of a project's relevant files (content for small files,
    size+mtime for big ones, so model weights are not read on every save).

    shipped: when given, files outside it count only if they are sources (is_source), and
    every file in it counts (whatever its name: the version shipped with it);
    model_dirs: absolute model folders (or files) inside the project, left out.
    """
    root = Path(project_dir)
    rules = read_watch_rules(root)
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else Path(rel_dir).as_posix() + "/"
        dirnames[:] = [
            d for d in dirnames
            if not rules.excludes(rel_dir + d, is_dir=True)
            and not _inside(os.path.join(dirpath, d), model_dirs)
        ]
        for name in filenames:
            rel = rel_dir + name
            if rules.excludes(rel):
                continue
            path = os.path.join(dirpath, name)
            if _inside(path, model_dirs) or (shipped is not None and path not in shipped
                                             and not is_source(rel)):
                continue
            try:
                st = os.stat(path)
                if st.st_size < SMALL_FILE:
                    with open(path, "rb") as f:
                        files[path] = hashlib.sha256(f.read()).hexdigest()
                else:
                    files[path] = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                continue  # vanished while walking: the next event reloads again
    return files


def api_files(files: Mapping[str, str], exclude: Iterable[str] = ()) -> dict[str, str]:
    """The files that make one API's version: a project's files less `exclude` (the other
    APIs' predictor files: an edit to one API's predictor rolls that API only; an edit to
    anything shared rolls them all)."""
    skip = set(exclude)
    return {path: digest for path, digest in files.items() if path not in skip}


def api_digest(files: Mapping[str, str], exclude: Iterable[str] = ()) -> str:
    """Digest of api_files(files, exclude)."""
    h = hashlib.sha256()
    kept = api_files(files, exclude)
    for path in sorted(kept):
        h.update(path.encode() + b"\0" + kept[path].encode() + b"\0")
    return h.hexdigest()[:12]


def changed_files(before: Mapping[str, str], after: Mapping[str, str], root: str) -> list[str]:
    """Paths (relative to root) added, removed or changed between two api_files() maps."""
    paths = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(os.path.relpath(p, root) for p in paths)


def describe_change(files: list[str], config_changed: str | None) -> str:
    """ "predictor.py changed", "cortex.yaml, predictor.py and 2 more files changed"..."""
    names = ([config_changed] if config_changed else []) + files
    if not names:
        return "configuration changed"
    shown = ", ".join(names[:3])
    more = len(names) - 3
    if more > 0:
        shown += f" and {more} more file{'s' if more > 1 else ''}"
    return f"{shown} changed"


class _Handler(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, roots: list[Path], notify: Callable[[str], None],
                 counts: Callable[[str], bool] | None = None):
        self._loop = loop
        self._roots = roots
        self._notify = notify
        self._counts = counts

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "") or ""):
            if path and self._relevant(os.fsdecode(path)):
                self._loop.call_soon_threadsafe(self._notify, os.fsdecode(path))
                return

    def _relevant(self, path: str) -> bool:
        p = Path(path)
        for root in self._roots:
            try:
                rel = p.relative_to(root)
            except ValueError:
                continue
            if is_ignored(str(rel), read_watch_rules(root)):
                return False
            return self._counts is None or self._counts(path)
        return False


class Burst:
    """When to act on a burst of edits (pure; times from the caller's clock): `debounce` seconds
    after its last event, capped at `max_wait` seconds after its first, so a stream of events
    that never pauses for `debounce` is acted on every `max_wait` rather than never."""

    def __init__(self, debounce: float, max_wait: float):
        self.debounce = debounce
        self.max_wait = max(max_wait, debounce)
        self.first: float | None = None  # the first event not yet acted on

    def add(self, now: float) -> float:
        """An event at `now`; returns when the burst is due."""
        if self.first is None:
            self.first = now
        return min(now + self.debounce, self.first + self.max_wait)

    def acted(self) -> None:
        """The burst was handed on: the next event starts a new one."""
        self.first = None


class ProjectWatcher:
    """Calls `on_change(paths)` (a coroutine function) once per burst of relevant edits."""

    def __init__(self, roots: Iterable[str], on_change, debounce: float = 0.5,
                 counts: Callable[[str], bool] | None = None, max_wait: float = 2.0):
        """counts(path): whether a changed path can change a version (None: every path not ignored);
        it runs on watchdog's thread. max_wait: the longest a burst that never pauses waits (Burst)."""
        self.roots = sorted({Path(r).resolve() for r in roots})
        self._counts = counts
        self._on_change = on_change
        self._debounce = debounce
        self._burst = Burst(debounce, max_wait)
        self._observer: BaseObserver | None = None  # Observer: the platform's kind
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._observer = Observer()
        handler = _Handler(self._loop, self.roots, self._on_event, self._counts)
        for root in self.roots:
            self._observer.schedule(handler, str(root), recursive=True)
        self._observer.daemon = True
        self._observer.start()

    def _on_event(self, path: str) -> None:
        assert self._loop is not None  # start() set it before the observer ran
        self._pending.add(path)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._burst.add(self._loop.time()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            # a reload is running: fire again once it is done, so the last edit always wins
            assert self._loop is not None  # a timer ran: started
            self._timer = self._loop.call_later(self._debounce, self._fire)
            return
        paths, self._pending = sorted(self._pending), set()
        self._burst.acted()
        self._task = asyncio.ensure_future(self._on_change(paths))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
