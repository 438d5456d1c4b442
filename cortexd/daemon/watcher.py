"""Watches project folders (watchdog) and tells the daemon, debounced, that something changed.

watchdog calls back on its own thread; events are handed to the asyncio loop with
call_soon_threadsafe and coalesced: editors write temp files and rename them, so
one save is several events, and the daemon reloads once `debounce` seconds after
the last relevant one. Irrelevant paths are dropped here: dotfiles and dot
folders (but `.env`, which replicas read), __pycache__ and bytecode, editor temp
files, what a running predictor typically writes next to its code (logs, sqlite
databases, pid and lock files: a predictor logging into its own folder must not
roll itself forever), and the project's `.cortexignore` patterns.

project_files() + api_files() + api_digest() are the other half of hot reload: a
digest of a project's files that the daemon folds into each API's spec hash, so an
edit to predictor code rolls the APIs that use it, and only those. What counts:
the sources (cortex.yaml, .env, dependency files, Python files) always, other files
only when the version shipped with them (`shipped`: the project's files when it was
deployed), so what a running predictor creates later (a cache, an output file)
never rolls it; model folders inside the project are left out (the runtime polls
them for new versions, as it does folders outside). `.cortexignore` is read with
.gitignore syntax (pathspec), as Cortex documents.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

import pathspec
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

EDITOR_TEMP = ("*~", "*.swp", "*.swx", "*.swo", "#*#", ".#*", "4913", "*.tmp", "*.part")
RUNTIME_OUTPUT = ("*.log", "*.log.[0-9]*", "*.db", "*.db-journal", "*.db-wal", "*.db-shm",
                  "*.sqlite", "*.sqlite3", "*.sqlite-journal", "*.pid", "*.lock")
KEPT_DOTFILES = {".cortexignore", ".env"}
SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn", "node_modules", ".venv", "venv"}
SMALL_FILE = 1 << 20  # hashed by content below this size, by size+mtime above
# files that always count, new or not: what defines a version (Cortex's project files)
SOURCE_NAMES = {"cortex.yaml", "cortex.yml", ".env", "requirements.txt", "dependencies.sh",
                "conda-packages.txt"}
SOURCE_SUFFIXES = (".py",)


def is_source(rel: str) -> bool:
    """A file that defines a version whether or not it existed when the version started."""
    name = os.path.basename(rel)
    return name in SOURCE_NAMES or name.endswith(SOURCE_SUFFIXES)


@functools.lru_cache(maxsize=64)
def _gitignore(patterns: tuple[str, ...]) -> pathspec.PathSpec:
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def ignore_patterns(project_dir: Path) -> list[str]:
    try:
        text = (project_dir / ".cortexignore").read_text()
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def is_ignored(rel: str, patterns: Iterable[str]) -> bool:
    """Whether a path relative to the project folder is irrelevant to the APIs."""
    parts = Path(rel).parts
    if not parts:
        return True
    name = parts[-1]
    if any(p.startswith(".") and p not in KEPT_DOTFILES for p in parts) or any(p in SKIP_DIRS for p in parts):
        return True
    if name.endswith((".pyc", ".pyo")) or any(fnmatch.fnmatch(name, pat) for pat in EDITOR_TEMP + RUNTIME_OUTPUT):
        return True
    patterns = tuple(patterns)
    return bool(patterns) and _gitignore(patterns).match_file(Path(rel).as_posix())


def _inside(path: str, folders: Collection[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def project_files(project_dir: str, *, shipped: Collection[str] | None = None,
                  model_dirs: Collection[str] = ()) -> dict[str, str]:
    """{absolute path: digest} of a project's relevant files (content for small files,
    size+mtime for big ones, so model weights are not read on every save).

    shipped: when given, files outside it count only if they are sources (is_source);
    model_dirs: absolute model folders (or files) inside the project, left out.
    """
    root = Path(project_dir)
    patterns = ignore_patterns(root)
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [
            d for d in dirnames
            if not is_ignored(os.path.normpath(os.path.join(rel_dir, d, "x")), patterns)
            and not _inside(os.path.join(dirpath, d), model_dirs)
        ]
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if is_ignored(rel, patterns):
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
            if is_ignored(str(rel), ignore_patterns(root)):
                return False
            return self._counts is None or self._counts(path)
        return False


class ProjectWatcher:
    """Calls `on_change(paths)` (a coroutine function) once per burst of relevant edits."""

    def __init__(self, roots: Iterable[str], on_change, debounce: float = 0.5,
                 counts: Callable[[str], bool] | None = None):
        """counts(path): whether a changed path can change a version (None: every path not ignored);
        it runs on watchdog's thread."""
        self.roots = sorted({Path(r).resolve() for r in roots})
        self._counts = counts
        self._on_change = on_change
        self._debounce = debounce
        self._observer: Observer | None = None
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
        self._pending.add(path)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._debounce, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            # a reload is running: fire again once it is done, so the last edit always wins
            self._timer = self._loop.call_later(self._debounce, self._fire)
            return
        paths, self._pending = sorted(self._pending), set()
        self._task = asyncio.ensure_future(self._on_change(paths))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            await asyncio.to_thread(self._observer.join, 5)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
