"""Where a predictor's models are: local folders and files, or s3:// prefixes (boto3).

A source lists its current content (Listing: version -> relative files and a
fingerprint of their state) and, for S3, downloads one version into a folder.
Integer subfolders are versions; a location whose own files already form a
model (model_layout.layout_problem) is unversioned and is version 1; a version
whose files do not form one is reported in Listing.problems and not served.
boto3 is the optional `s3` extra: without it start-up fails saying what to
install. The store (models.py) decides what is served and cached.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from predictor_runtime.model_layout import layout_problem

log = logging.getLogger("predictor_runtime")


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


class S3Source:
    """A model under an s3://bucket/prefix URL, listed and downloaded with boto3."""

    remote = True

    def __init__(self, location: str, client: Any = None):
        self.location = location
        rest = location[len("s3://"):]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    def __repr__(self) -> str:
        return self.location

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def check(self) -> None:
        self.client  # noqa: B018 - fail at start-up when boto3 is missing

    def _objects(self) -> list[tuple[str, int, str]]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents") or ():
                rel = obj["Key"][len(self.prefix):]
                if rel and not rel.endswith("/"):
                    out.append((rel, obj.get("Size", 0), str(obj.get("ETag", ""))))
        return out

    def listing(self, kind: str) -> Listing:
        try:
            objects = self._objects()
        except Exception as e:
            log.error("error: cannot list %s: %s", self.location, e)
            raise ModelSourceError(f"cannot list {self.location}: {e}") from None
        top = [(r, s, t) for r, s, t in objects if "/" not in r]
        by_version: dict[str, list[tuple[str, int, str]]] = {}
        for rel, size, tag in objects:
            head, _, tail = rel.partition("/")
            if head.isdigit() and tail:
                by_version.setdefault(head, []).append((tail, size, tag))
        if not by_version or (top and layout_problem(kind, [r for r, _, _ in top]) is None):
            files = frozenset(r for r, _, _ in objects)
            problem = layout_problem(kind, files)
            return Listing({} if problem else {1: (files, tuple(sorted(objects)))}, False,
                           {".": problem} if problem else {})
        versions, problems = {}, {}
        for v, objs in by_version.items():
            files = frozenset(r for r, _, _ in objs)
            problem = layout_problem(kind, files)
            if problem:
                problems[v] = problem
            else:
                versions[int(v)] = (files, tuple(sorted(objs)))
        return Listing(versions, True, problems)

    def download(self, version: int, versioned: bool, files: Iterable[str], dest: str) -> None:
        base = self.prefix + (f"{version}/" if versioned else "")
        for rel in files:
            target = os.path.join(dest, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self.client.download_file(self.bucket, base + rel, target)


def s3_client() -> Any:
    try:
        import boto3  # optional: the `s3` extra
    except ImportError:
        raise ModelSourceError("s3:// model paths need boto3, which is not installed in this replica; "
                               "install cortexd with the s3 extra (pip install 'cortexd[s3]') "
                               "or add boto3 to the project's requirements.txt") from None
    return boto3.client("s3")


def make_source(location: str) -> LocalSource | S3Source:
    if location.startswith("s3://"):
        return S3Source(location)
    if "://" in location:
        raise ModelSourceError(f"model path {location!r}: only local paths and s3:// URLs are supported")
    return LocalSource(location)
