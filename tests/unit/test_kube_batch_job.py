"""A BatchAPI's job exported for a cluster (issue 18's cluster path): `export kubernetes --job`
writes a ConfigMap of the batches the daemon would cut and an Indexed Job (completions = shares,
parallelism = workers) that runs them with the image `cortexd build` makes; every object validates
strictly against the targeted Kubernetes minor's schemas; refusals name the file and the fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cortexd.core.batch_jobs import parse_submission
from cortexd.errors import ExportError
from cortexd.job_sources import submission_batches
from cortexd.kube import batch_job
from cortexd.kube.batch_job import job_files
from cortexd.kube.export import export_kubernetes
from cortexd.kube.manifests import TARGET_KUBERNETES, ExportOptions, Flavor
from cortexd.spec import load_config
from predictor_runtime.batch_worker import BATCHES_FAILED, STARTUP_FAILED, LocalBatches
from tests.builders import write_project

REGISTRY = "registry.example:5000/team"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PREDICTOR = ("class PythonPredictor:\n    def __init__(self, config, job_spec):\n        pass\n"
             "    def predict(self, payload, batch_id):\n        pass\n")


def batch_yaml(name: str = "scorer") -> str:
    return (f"- name: {name}\n  kind: BatchAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
            "    config: {threshold: 1}\n  compute: {cpu: 500m, mem: 256Mi}\n")


@pytest.fixture
def project(tmp_path) -> Path:
    root = write_project(tmp_path / "p", batch_yaml(), {"predictor.py": PREDICTOR, ".env": "TOKEN=abc\n"})
    (root / "data").mkdir()
    (root / "data" / "a.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(7)))
    return root


def export(project: Path, submission: dict, tmp_path: Path, name: str = "scorer",
           flavor: Flavor = "deployment") -> tuple[dict, list[str]]:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(submission))
    out = tmp_path / "k8s"
    loaded = load_config([str(project)])
    options = ExportOptions(flavor=flavor, namespace="ml")
    report = export_kubernetes([*loaded.apis, *loaded.batch_apis], REGISTRY, options, out, jobs={name: job}, now=NOW)
    docs: dict = {}
    for f in sorted(out.rglob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                docs[(d["kind"], d["metadata"]["name"], f.relative_to(out).as_posix())] = d
    return docs, report


def items(n: int, batch_size: int = 2, workers: int = 2) -> dict:
    return {"workers": workers, "item_list": {"items": [{"id": i} for i in range(n)], "batch_size": batch_size},
            "config": {"threshold": 5}}


@pytest.mark.parametrize("flavor", ["deployment", "knative"])  # a Job either way
def test_every_object_validates_strictly(project, tmp_path, flavor):
    docs, _ = export(project, items(5), tmp_path, flavor=flavor)
    assert sorted(k[0] for k in docs) == ["ConfigMap", "Job", "Job", "Secret"]
    for doc in docs.values():
        kubernetes_validate.validate(doc, f"{TARGET_KUBERNETES}.0", strict=True)


def test_the_indexed_job_runs_the_daemons_batches_with_the_built_image(project, tmp_path):
    docs, report = export(project, items(5, workers=2), tmp_path)
    (cm,) = [d for k, d in docs.items() if k[0] == "ConfigMap"]
    (job,) = [d for k, d in docs.items() if k[0] == "Job" and k[2] == "scorer.yaml"]
    daemon_batches, _ = submission_batches(parse_submission(items(5, workers=2)), str(project))
    assert [cm["data"][batch_job.batch_key(i)] for i in range(3)] == daemon_batches
    job_spec = json.loads(cm["data"]["job_spec.json"])
    assert job_spec == {"job_id": job["metadata"]["name"].rpartition("-")[2], "api_name": "scorer",
                        "config": {"threshold": 5}, "workers": 2, "total_batch_count": 3,
                        "start_time": "2026-01-02T03:04:05+00:00"}
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    image = next(ln for ln in report if "note: image" in ln).split()[2]
    assert c["image"] == image and image.startswith(f"{REGISTRY}/scorer:")
    assert c["command"] == ["python", "-m", "predictor_runtime.batch_worker"]
    assert c["args"] == ["--spec", "/etc/cortexd/spec.json", "--batches", batch_job.JOB_DIR, "--shares", "2",
                         "--attempts", "3"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["runAsUser"] == 10001
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
    assert c["env"] == [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "scorer-dotenv", "key": "TOKEN"}}}]
    assert "ports" not in c and "readinessProbe" not in c
    assert pod["restartPolicy"] == "Never" and {"name": "job", "configMap": {"name": cm["metadata"]["name"]}} in \
        pod["volumes"]
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [STARTUP_FAILED, BATCHES_FAILED]


def test_shares_are_at_most_the_batches_and_on_job_complete_is_a_job_apart(project, tmp_path):
    docs, report = export(project, items(3, batch_size=2, workers=5), tmp_path)
    jobs = {k[2]: d for k, d in docs.items() if k[0] == "Job"}
    assert (jobs["scorer.yaml"]["spec"]["completions"], jobs["scorer.yaml"]["spec"]["parallelism"]) == (2, 5)
    complete = jobs[f"{batch_job.COMPLETE_FOLDER}/scorer.yaml"]
    assert complete["metadata"]["name"] == jobs["scorer.yaml"]["metadata"]["name"] + "-complete"
    assert complete["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--on-job-complete"
    assert any("kubectl wait --for=condition=complete" in ln for ln in report)


def test_delimited_files_are_read_here_into_the_config_map(project, tmp_path):
    docs, report = export(project, {"workers": 1, "delimited_files": {"s3_paths": ["data/"], "batch_size": 3}},
                          tmp_path)
    (cm,) = [d for k, d in docs.items() if k[0] == "ConfigMap"]
    assert [json.loads(cm["data"][batch_job.batch_key(i)]) for i in range(3)] == [
        [{"id": 0}, {"id": 1}, {"id": 2}], [{"id": 3}, {"id": 4}, {"id": 5}], [{"id": 6}]]
    assert any("delimited_files: the items of 1 file(s) were read here" in ln for ln in report)


def test_the_same_submission_is_the_same_job_and_another_is_not(project, tmp_path):
    first, _ = export(project, items(4), tmp_path)
    again, _ = export(project, items(4), tmp_path)
    other, _ = export(project, items(5), tmp_path)
    assert set(first) == set(again) and set(first) != set(other)


def test_a_long_api_name_still_makes_names_kubernetes_accepts(tmp_path):
    name = "a" + "b" * 61
    root = write_project(tmp_path / "long", batch_yaml(name), {"predictor.py": PREDICTOR})
    docs, _ = export(root, items(2), tmp_path, name=name)
    assert all(len(k[1]) <= 63 for k in docs)
    for doc in docs.values():
        kubernetes_validate.validate(doc, f"{TARGET_KUBERNETES}.0", strict=True)


def test_a_batch_api_without_a_job_or_a_job_of_no_batch_api_is_refused(project, tmp_path):
    apis = list(load_config([str(project)]).batch_apis)
    with pytest.raises(ExportError, match=r"cortex.yaml:1: batch api 'scorer': give the job .* --job scorer="):
        export_kubernetes(apis, REGISTRY, ExportOptions(), tmp_path / "k8s")
    with pytest.raises(ExportError, match=r"no BatchAPI 'other' \(its BatchAPIs: scorer\)"):
        export_kubernetes(apis, REGISTRY, ExportOptions(), tmp_path / "k8s",
                          jobs={"scorer": tmp_path, "other": tmp_path})
    assert not (tmp_path / "k8s").exists()


def test_a_bad_submission_names_its_file_and_what_is_wrong(project, tmp_path):
    job = tmp_path / "job.json"
    apis = list(load_config([str(project)]).batch_apis)
    job.write_text('{"workers": 1,\n  "item_list": }')
    with pytest.raises(ExportError, match=rf"{job}:2:16: not JSON"):
        export_kubernetes(apis, REGISTRY, ExportOptions(), tmp_path / "k8s", jobs={"scorer": job})
    job.write_text(json.dumps({"workers": 0, "item_list": {"items": [1], "batch_size": 1}}))
    with pytest.raises(ExportError, match=rf"{job}: batch api 'scorer': workers: must be greater than"):
        export_kubernetes(apis, REGISTRY, ExportOptions(), tmp_path / "k8s", jobs={"scorer": job})


def test_batches_past_what_a_config_map_holds_are_refused_with_the_remedy(project, tmp_path):
    big = {"workers": 1, "item_list": {"items": ["x" * 200_000] * 6, "batch_size": 1}}
    with pytest.raises(ExportError, match=r"more than a ConfigMap holds \(1048576 bytes\): submit fewer"):
        export(project, big, tmp_path)


def test_job_flags():
    assert job_files(["s=job.json"], ["s", "t"]) == {"s": Path("job.json")}
    assert job_files(["job.json"], ["s"]) == {"s": Path("job.json")}
    with pytest.raises(ExportError, match=r"as --job API=job.json \(BatchAPIs here: s, t\)"):
        job_files(["job.json"], ["s", "t"])
    with pytest.raises(ExportError, match="given twice"):
        job_files(["s=a.json", "s=b.json"], ["s"])


def test_a_pods_share_is_every_nth_batch_each_tried_its_attempts(tmp_path):
    (tmp_path / "job_spec.json").write_text(json.dumps({"total_batch_count": 5}))
    for i in range(5):
        (tmp_path / batch_job.batch_key(i)).write_text(json.dumps([i]))
    share = LocalBatches(str(tmp_path), index=1, shares=2, attempts=2)
    status, answer = share.post("claim", {})
    assert (status, answer["index"], answer["payload"]) == (200, 1, "[1]")
    status, answer = share.post("done", {"index": 1, "attempt": 1, "error": "boom"})
    assert (status, answer["index"], answer["attempt"]) == (200, 1, 2)  # tried again
    status, answer = share.post("done", {"index": 1, "attempt": 2, "error": "boom"})
    assert (status, answer["index"]) == (200, 3)  # failed twice: recorded, the next one
    assert share.post("done", {"index": 3, "attempt": 1, "error": None}) == (410, {"on_job_complete": False})
    assert share.failed == [1]
