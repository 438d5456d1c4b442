"""A job submission's data, read: the items of item_list, file_path_lister's file paths, and
delimited_files' JSON lines, cut into batches (core.batch_jobs). I/O: the daemon runs it off the
event loop (daemon/jobs.py); `cortexd export kubernetes --job` cuts a cluster's job with it
(kube/batch_job.py).

`s3_paths` are read as Cortex read S3 prefixes, for the files of this host: a local path (relative
to the API's project folder) or a `file://` URL names a file, a folder (every file under it), or a
prefix of file names (`data/part-` selects `data/part-0.json`, `data/part-1.json`); the includes
and excludes globs match the paths as written back (file:// kept). An `s3://` path is refused
with a 400 for now (jobs read local files). A path that selects nothing, a file that cannot be
read or a line that is not JSON is a SubmissionError (400) naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from cortexd.core.batch_jobs import Submission, SubmissionError, batches_of, encode_item, select_paths

FILE_SCHEME = "file://"


def submission_batches(submission: Submission, project_dir: str) -> tuple[list[str], list[str]]:
    """(batches, files read) of a submission: its batches as JSON texts, and for the listers the
    files selected (what `dryRun=true` shows)."""
    if submission.source == "item_list":
        encoded = (encode_item(item, i) for i, item in enumerate(submission.items))
        return batches_of(encoded, submission.batch_size), []
    files = listed_files(submission, project_dir)
    if submission.source == "file_path_lister":
        return batches_of((encode_item(p, i) for i, p in enumerate(files)), submission.batch_size), files
    batches = batches_of(_json_lines(files, project_dir), submission.batch_size)
    if not batches:
        raise SubmissionError(f"unable to enqueue batches because no data was found in {', '.join(files)}")
    return batches, files


def listed_files(submission: Submission, project_dir: str) -> list[str]:
    lister = submission.lister
    assert lister is not None  # parse_submission gives the listers one
    found: list[str] = []
    for path in lister.paths:
        if path.startswith("s3://"):
            raise SubmissionError(f"{submission.source}.s3_paths: {path}: s3:// paths are not read by cortexd's jobs "
                                  "yet; give local paths or file:// URLs")
        found += _expand(path, project_dir)
    selected = select_paths(dict.fromkeys(found), lister.includes, lister.excludes)
    if not selected:
        raise SubmissionError(f"{submission.source}: no files match search criteria "
                              f"(s3_paths {list(lister.paths)}, includes {list(lister.includes)}, "
                              f"excludes {list(lister.excludes)})")
    return selected


def _local(path: str, project_dir: str) -> str:
    bare = path[len(FILE_SCHEME):] if path.startswith(FILE_SCHEME) else path
    return os.path.normpath(os.path.join(project_dir, bare))


def _expand(path: str, project_dir: str) -> list[str]:
    """The files a path names (as written: a file:// path gives file:// paths)."""
    local = _local(path, project_dir)
    scheme = FILE_SCHEME if path.startswith(FILE_SCHEME) else ""
    if os.path.isfile(local):
        return [path]
    if os.path.isdir(local):
        folder, prefix = local, ""
    else:
        folder, prefix = os.path.split(local)
        if not os.path.isdir(folder):
            return []
    out = []
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            if full.startswith(os.path.join(folder, prefix)):
                out.append(scheme + full if scheme or os.path.isabs(path) else os.path.relpath(full, project_dir))
    return sorted(out)  # as S3 lists keys


def _json_lines(files: list[str], project_dir: str) -> Iterator[str]:
    index = 0
    for path in files:
        try:
            with open(_local(path, project_dir), encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError as e:
                        raise SubmissionError(f"delimited_files: {path}:{number}: not a JSON value ({e})") from None
                    yield encode_item(item, index)
                    index += 1
        except (OSError, UnicodeDecodeError) as e:
            raise SubmissionError(f"delimited_files: {path}: cannot be read ({getattr(e, 'strerror', None) or e})"
                                  ) from None
