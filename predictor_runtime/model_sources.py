"""Where a predictor's models are: what every source answers (Listing), and local folders and files.

A source lists its current content (Listing: version -> relative files and a
fingerprint of their state); an S3 source (model_s3.py) also downloads one
version into a folder. Integer subfolders are versions; a location whose own
files already form a model (model_layout.layout_problem) is unversioned and is
version 1; a version whose files do not form one is reported in
Listing.problems and not served. The store (models.py) decides what is served
and cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from predictor_runtime.model_layout import layout_problem


class ModelSourceError(Exception):
    """A model location cannot be used (user-fixable; reported at start-up)."""


@dataclass(frozen=True)
class Listing:
    """A source's current content: version -> (relative files, fingerprint of their state)."""

    versions: dict[int, tuple[frozenset[str], tuple[Any, ...]]]
    versioned: bool
    problems: dict[str, str] = field(default_factory=dict)  # version folder -> layout problem


class LocalSource:
    """A model on the local filesystem: a folder (versioned or not) or a single .onnx file."""

    remote = False

    def __init__(self, location: str):
        self.location = location

    def __repr__(self) -> str:
        return self.location

    def check(self) -> None:
        if not os.path.exists(self.location):
            raise ModelSourceError(f"model path {self.location} does not exist")

    @staticmethod
    def _walk(root: str) -> tuple[frozenset[str], tuple[Any, ...]]:
        files, marks = [], []
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for n in sorted(names):
                full = os.path.join(folder, n)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                try:
                    st = os.stat(full)
                except OSError:  # removed while listing: the next poll sees the truth
                    continue
                files.append(rel)
                marks.append((rel, st.st_size, st.st_mtime_ns))
        return frozenset(files), tuple(marks)

    def listing(self, kind: str) -> Listing:
        loc = self.location
        if os.path.isfile(loc):
            st = os.stat(loc)
            name = os.path.basename(loc)
            return Listing({1: (frozenset([name]), ((name, st.st_size, st.st_mtime_ns),))}, versioned=False)
        if not os.path.isdir(loc):
            return Listing({}, versioned=False)
        entries = os.listdir(loc)
        top_files = [e for e in entries if os.path.isfile(os.path.join(loc, e))]
        version_dirs = sorted((e for e in entries if e.isdigit() and os.path.isdir(os.path.join(loc, e))), key=int)
        if not version_dirs or (top_files and layout_problem(kind, top_files) is None):
            files, marks = self._walk(loc)
            problem = layout_problem(kind, files)
            return Listing({} if problem else {1: (files, marks)}, False, {".": problem} if problem else {})
        versions, problems = {}, {}
        for v in version_dirs:
            files, marks = self._walk(os.path.join(loc, v))
            problem = layout_problem(kind, files)
            if problem:
                problems[v] = problem
            else:
                versions[int(v)] = (files, marks)
        return Listing(versions, True, problems)

    def local_path(self, version: int, versioned: bool) -> str:
        if not versioned:
            return self.location
        return os.path.join(self.location, str(version))
