"""Which files of a project folder belong to the project: one rule for the daemon and the images.

Two readers need it and must agree: the daemon's watcher (cortexd/daemon/watcher.py:
which edits can change a version) and `cortexd build` / `cortexd export`
(cortexd/kube/bundle.py: which files go into an API's image). Cortex's rules are the
base of both: dot files and dot folders, `__pycache__`, `*.pyc` / `*.pyo` and the
project's cortex.yaml stay out, and `.cortexignore` is read with .gitignore syntax
(pathspec), a folder matched as `dir/` as git does. Each reader adds its own extras
(the watcher: editor temp files; both may keep some dot files, the watcher `.env` and
`.cortexignore`, which define a version).

`project_filter(root)` reads `.cortexignore` (the I/O); an unreadable one raises
CortexIgnoreUnreadable, which `cortexd build`/`export` turn into an error and the
watcher into a warning. `ProjectFilter.excludes()` is pure.

`hash_file()` reads a file that goes into an image in chunks, into a HostFile (path,
size, sha256): image tags and build contexts use it, so no file is held in memory whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from cortexd.errors import CortexdError

CORTEXIGNORE = ".cortexignore"
BYTECODE_DIR = "__pycache__"
BYTECODE_SUFFIXES = (".pyc", ".pyo")
# what an editor writes while saving (the watcher's extra rule: never a version's file);
# gitignore syntax, where `\#` is a literal `#` (a leading `#` starts a comment)
EDITOR_TEMP_PATTERNS = ("*~", "*.swp", "*.swx", "*.swo", r"\#*#", ".#*", "4913", "*.tmp", "*.part")


class CortexIgnoreUnreadable(CortexdError):
    """The project's .cortexignore exists but cannot be read."""


@dataclass(frozen=True)
class ProjectFilter:
    """Cortex's project-file rules for one folder (paths relative to it, '/'-separated)."""

    ignored: pathspec.PathSpec | None = None  # the project's .cortexignore
    config_files: frozenset[str] = frozenset()  # relative paths of the cortex.yaml files left out
    keep_dotfiles: frozenset[str] = frozenset()  # dot files kept anyway (by name)
    extra: pathspec.PathSpec | None = None  # the reader's own patterns

    def excludes(self, rel: str, is_dir: bool = False) -> bool:
        """Whether `rel` (a file, or a folder when is_dir) is not one of the project's files."""
        rel = rel.strip("/")
        parts = rel.split("/")
        if not rel or rel == ".":
            return False
        if any(p.startswith(".") and p not in self.keep_dotfiles for p in parts) or BYTECODE_DIR in parts:
            return True
        if not is_dir and (parts[-1].endswith(BYTECODE_SUFFIXES) or rel in self.config_files):
            return True
        candidate = rel + "/" if is_dir else rel  # gitignore's `dir/` patterns match folders only
        return any(spec is not None and spec.match_file(candidate) for spec in (self.ignored, self.extra))


def read_cortexignore(root: str | Path) -> pathspec.PathSpec | None:
    """The project's .cortexignore as a PathSpec (None: there is none); CortexIgnoreUnreadable."""
    path = Path(root) / CORTEXIGNORE
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise CortexIgnoreUnreadable(f"cannot read {path}: {e}") from None
    return pathspec.GitIgnoreSpec.from_lines(text.splitlines())


def project_filter(root: str | Path, *, config_files: Iterable[str] = (), keep_dotfiles: Iterable[str] = (),
                   extra_patterns: Iterable[str] = ()) -> ProjectFilter:
    """The rules for `root`: Cortex's base rules, its .cortexignore, and the reader's extras."""
    extra = tuple(extra_patterns)
    return ProjectFilter(
        ignored=read_cortexignore(root),
        config_files=frozenset(config_files),
        keep_dotfiles=frozenset(keep_dotfiles),
        extra=pathspec.GitIgnoreSpec.from_lines(extra) if extra else None,
    )


# ---- files read for an image, without holding them in memory -----------------------------

HASH_CHUNK = 1 << 20  # bytes read at a time: a model of many GiB is never in memory at once


@dataclass(frozen=True)
class HostFile:
    """A file on the host that goes into an image, known by its size and its content's sha256.

    Build contexts stream it from `path` (cortexd/backends/image_plans.py write_context);
    image tags fold in `sha256` (cortexd/kube/layout.py), so the bytes are read once, in chunks.
    """

    path: str
    size: int
    sha256: str  # hex digest of the content
    # its permission bits on the host, when the image keeps them (`cortexd build`: image_mode());
    # None: the build context's own rule (0644, 0755 for *.sh)
    mode: int | None = None
    # a symbolic link kept as one: its target, relative to the link's folder (sha256 is the
    # target's, size 0); `cortexd build` keeps links that stay inside what it packs
    link: str | None = None


def image_mode(host_mode: int) -> int:
    """A project file's mode in a `cortexd build` image, from its mode on the host (pure).

    The image's files are root's and its predictor runs as uid 10001 through group 10001 (the
    Dockerfile COPYs with --chown=0:10001): the group gets the owner's read and execute bits, so
    what the host's owner could read the predictor reads, an executable stays executable, and a
    file others could not read (a 0600 secret: 0640) stays unreadable to every other user. No one
    but root writes (the image is read-only where it runs); set-id and sticky bits are dropped.
    """
    return (host_mode & 0o755) | ((host_mode & 0o500) >> 3)


def hash_file(path: str | Path) -> HostFile:
    """The file's size and sha256, read in HASH_CHUNK pieces (OSError when it cannot be read)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return HostFile(str(path), size, h.hexdigest())


# ---- the files a project's requirements bring in (core/requirements.py requirement_tree) ---------


def _inside(root: Path, path: Path) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


def project_reader(root: str | Path) -> Callable[[str], bytes | None]:
    """`read(rel)` for requirement_tree: the bytes of the project file at `rel`; None when there is
    no such file or its real path leaves the project (a symlink out). Other OSErrors propagate."""
    base = Path(os.path.realpath(root))

    def read(rel: str) -> bytes | None:
        path = base / rel
        if not _inside(base, path) or not path.is_file():
            return None
        return path.read_bytes()

    return read


def local_requirement_files(root: str | Path, rel: str) -> dict[str, Path] | None:
    """The files of a local path a requirement installs from (`./wheels/x.whl`, `-e ./pkg`):
    project-relative path -> host path; a folder's files but dot files, `__pycache__` and
    bytecode. None when `rel` is not there or leaves the project (a symlink out)."""
    base = Path(os.path.realpath(root))
    top = base / rel if rel else base
    if not _inside(base, top) or not top.exists():
        return None
    if top.is_file():
        return {rel: top}
    rules = ProjectFilter()
    out: dict[str, Path] = {}
    for folder, dirs, names in os.walk(top):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not rules.excludes((here / d).relative_to(base).as_posix(), True)
                         and _inside(base, here / d))
        for name in sorted(names):
            path = here / name
            key = path.relative_to(base).as_posix()
            if not rules.excludes(key) and path.is_file() and _inside(base, path):
                out[key] = path
    return out
