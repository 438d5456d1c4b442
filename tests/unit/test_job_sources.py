"""A job's data read from this host's files (cortexd/job_sources.py): paths, folders, prefixes and
file:// URLs as Cortex read S3 prefixes, its globs, and the files it cannot read said as 400s."""

from __future__ import annotations

import json

import pytest

from cortexd.core.batch_jobs import SubmissionError, parse_submission
from cortexd.job_sources import submission_batches


@pytest.fixture
def project(tmp_path):
    data = tmp_path / "data"
    (data / "nested").mkdir(parents=True)
    (data / "part-0.json").write_text('{"id": 0}\n{"id": 1}\n\n')
    (data / "part-1.json").write_text('{"id": 2}\n')
    (data / "nested" / "x.json").write_text('{"id": 3}\n')
    (data / "notes.txt").write_text("not json\n")
    return tmp_path


def batches(project, source: str, **lister) -> tuple[list, list[str]]:
    body = {"workers": 1, source: {"batch_size": 2, **lister}}
    got, files = submission_batches(parse_submission(body), str(project))
    return [json.loads(b) for b in got], files


def test_a_folder_a_prefix_and_a_file_url(project):
    assert batches(project, "file_path_lister", s3_paths=["data/"])[1] == [
        "data/nested/x.json", "data/notes.txt", "data/part-0.json", "data/part-1.json"]
    assert batches(project, "file_path_lister", s3_paths=["data/part-"]) == (
        [["data/part-0.json", "data/part-1.json"]], ["data/part-0.json", "data/part-1.json"])
    url = f"file://{project}/data/part-1.json"
    assert batches(project, "file_path_lister", s3_paths=[url]) == ([[url]], [url])


def test_delimited_files_cut_into_batches_with_globs(project):
    got, files = batches(project, "delimited_files", s3_paths=["data/"], includes=["**.json"],
                         excludes=["**/nested/**"])
    assert files == ["data/part-0.json", "data/part-1.json"]
    assert got == [[{"id": 0}, {"id": 1}], [{"id": 2}]]


@pytest.mark.parametrize(("lister", "said"), [
    ({"s3_paths": ["data/"], "includes": ["**.txt"]}, "delimited_files: data/notes.txt:1: not a JSON value"),
    ({"s3_paths": ["missing/"]}, "no files match search criteria"),
    ({"s3_paths": ["s3://bucket/x"]}, "s3:// paths are not read by cortexd's jobs yet"),
])
def test_what_cannot_be_read_is_said(project, lister, said):
    with pytest.raises(SubmissionError, match=said):
        batches(project, "delimited_files", **lister)


def test_files_without_data_are_refused(project):
    (project / "data" / "empty.json").write_text("\n\n")
    with pytest.raises(SubmissionError, match="unable to enqueue batches because no data was found"):
        batches(project, "delimited_files", s3_paths=["data/empty.json"])
