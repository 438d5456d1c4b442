"""A BatchAPI job's pure rules (core/batch_jobs.py): submissions refused in Cortex 0.23's words,
items cut into batches under the 256 KiB limit, includes/excludes globs as Cortex compiled them,
a batch's retries, and the job's status values."""

from __future__ import annotations

import pytest

from cortexd.core.batch_jobs import (
    MESSAGE_LIMIT,
    BatchCounts,
    BatchState,
    JobStatus,
    Lister,
    SubmissionError,
    after_attempt,
    batches_of,
    encode_item,
    job_status,
    lease_expired,
    merged_config,
    parse_submission,
    select_paths,
)


def refused(body) -> str:
    with pytest.raises(SubmissionError) as raised:
        parse_submission(body)
    return str(raised.value)


def test_item_list_submission():
    s = parse_submission({"workers": 2, "item_list": {"items": [1, {"a": 2}], "batch_size": 10},
                          "config": {"k": 1}})
    assert (s.workers, s.source, s.batch_size, s.items, s.config, s.lister) == (
        2, "item_list", 10, (1, {"a": 2}), {"k": 1}, None)


def test_file_listers_take_paths_and_globs():
    s = parse_submission({"workers": 1, "delimited_files": {"s3_paths": ["data/", "file:///x.json"],
                                                             "includes": ["**.json"], "batch_size": 5}})
    assert (s.source, s.batch_size, s.lister) == ("delimited_files", 5,
                                                  Lister(("data/", "file:///x.json"), ("**.json",), ()))


@pytest.mark.parametrize(("body", "said"), [
    ({"workers": 1}, "specify exactly one of the following keys: item_list, file_path_lister, delimited_files"),
    ({"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "delimited_files": {"s3_paths": ["a"]}},
     "please specify either the item_list or delimited_files field (but not more than one at the same time)"),
    ({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}, "workers: must be greater than or equal to 1"),
    ({"item_list": {"items": [1], "batch_size": 1}}, "workers: expected an integer; found null"),
    ({"workers": 1, "item_list": {"items": [], "batch_size": 1}}, "item_list.items: expected a list of at least 1"),
    ({"workers": 1, "item_list": {"items": [1], "batch_size": 0}}, "item_list.batch_size: must be greater than"),
    ({"workers": 1, "file_path_lister": {"s3_paths": [], "batch_size": 1}}, "s3_paths: must have at least 1"),
    ({"workers": 1, "file_path_lister": {"s3_paths": ["a"], "includes": ["[a"], "batch_size": 1}},
     "file_path_lister.includes: '[a': unclosed '['"),
    ({"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "worker": 2}, "unknown field 'worker'"),
    ({"workers": 1, "item_list": {"items": [1], "batch_size": 1}, "config": [1]}, "config: expected a JSON object"),
    ([1], "expected a JSON object with workers"),
])
def test_bad_submissions_are_said(body, said):
    assert said in refused(body)


def test_items_cut_into_batches_of_batch_size():
    batches = batches_of((encode_item(i, i) for i in range(25)), 10)
    assert batches == ["[" + ",".join(map(str, range(n, min(n + 10, 25)))) + "]" for n in (0, 10, 20)]


def test_an_item_or_a_batch_over_256_kib_is_refused():
    big = "x" * (MESSAGE_LIMIT // 2)
    with pytest.raises(SubmissionError, match="item 3 has size 262147 bytes which exceeds the limit"):
        encode_item("x" * (MESSAGE_LIMIT + 1), 3)
    with pytest.raises(SubmissionError, match=r"batch 0 has size .* exceeds the 262144 bytes limit .*smaller batch"):
        batches_of([encode_item(big, 0), encode_item(big, 1)], 2)
    assert len(batches_of([encode_item(big, 0), encode_item(big, 1)], 1)) == 2


def test_globs_as_cortex_documents_them():
    files = ["s3://bucket/images/img_1.png", "s3://bucket/images/img_2.jpg", "s3://bucket/images/img_3.jpg",
             "s3://bucket/images/img_4.gif"]
    assert select_paths(files, ["**.jpg"], []) == files[1:3]
    assert select_paths(files, ["**.jpg"], ["**_3.jpg"]) == files[1:2]
    assert select_paths(files, [], ["**.gif"]) == files[:3]
    assert select_paths(files, ["*.jpg"], []) == []  # '*' does not cross '/'
    assert select_paths(files, ["s3://bucket/images/img_?.{png,gif}"], []) == [files[0], files[3]]
    assert select_paths(files, ["**img_[!1].*"], []) == files[1:]


def test_a_failed_or_lost_batch_is_retried_then_failed():
    assert [after_attempt(n, 3) for n in (1, 2, 3)] == [BatchState.QUEUED, BatchState.QUEUED, BatchState.FAILED]
    assert not lease_expired(100.0, 130.0, 60.0) and lease_expired(100.0, 160.5, 60.0)


def test_job_status_follows_its_batches():
    assert job_status(BatchCounts(queued=3, running=1)) is JobStatus.RUNNING
    assert job_status(BatchCounts(succeeded=4)) is JobStatus.SUCCEEDED
    assert job_status(BatchCounts(succeeded=3, failed=1)) is JobStatus.COMPLETED_WITH_FAILURES
    assert job_status(BatchCounts(queued=3), stopped=True) is JobStatus.STOPPED
    assert job_status(BatchCounts(queued=3), worker_error=True) is JobStatus.WORKER_ERROR
    assert JobStatus.SUCCEEDED.done and not JobStatus.RUNNING.done and BatchCounts(1, 2, 3, 4).total == 10


def test_job_config_overrides_the_apis():
    assert merged_config({"a": 1, "b": 2}, {"b": 3}) == {"a": 1, "b": 3}
