"""A BatchAPI's job for a cluster (pure): `cortexd export kubernetes --job API=SUBMISSION.json`.

Nothing of cortexd runs in the cluster, so the batches are made at export, from the submission
(Cortex's job request body), by the code the daemon cuts a job with (cortexd/job_sources.py,
core/batch_jobs.py), and travel in a ConfigMap mounted at JOB_DIR:

    ConfigMap <name>        job_spec.json (what the predictor's job_spec gets) and one key per
                            batch, batch-000000.json ... (the batch's JSON list of items)
    Job <name>              Indexed: completions = shares = min(workers, batches), parallelism =
                            workers; pod i (JOB_COMPLETION_INDEX) runs predictor_runtime.batch_worker
                            on batches i, i + shares, i + 2*shares, ... with the API's image from
                            `cortexd build` (its baked runtime spec; the job's config over
                            predictor.config), each batch tried up to MAX_ATTEMPTS times in the pod
    Job <name>-complete     one pod that calls the predictor's on_job_complete() (one without it
                            is not even constructed): written apart (COMPLETE_FOLDER), to apply once the first Job
                            completed, as Cortex called it once after the last batch

A pod whose batches failed (after their attempts) exits BATCHES_FAILED, one whose predictor
cannot start STARTUP_FAILED: the podFailurePolicy fails that index at once (running its share
again would repeat the same failure); a pod lost otherwise (a node gone, OOM) runs again, up to
POD_RETRIES times, and a disruption (drain, preemption) is not counted. The Job ends Complete,
or Failed naming the failed indexes: Cortex's status_succeeded / status_completed_with_failures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortexd.core.batch_jobs import DEFAULT_MAX_ATTEMPTS, Submission
from cortexd.errors import ExportError
from cortexd.kube import layout
from cortexd.kube.manifests import ExportOptions, container, labels, metadata, security_context
from cortexd.spec.model import APISpec
from predictor_runtime import batch_worker

JOB_DIR = "/etc/cortexd/job"  # the ConfigMap's mount in the pods
JOB_SPEC_KEY = batch_worker.JOB_SPEC_FILE
CONFIG_MAP_LIMIT = 1024 * 1024  # bytes of a ConfigMap's data Kubernetes accepts
MAX_ATTEMPTS = DEFAULT_MAX_ATTEMPTS  # a batch's tries inside its pod, as the daemon tries it
POD_RETRIES = 2  # backoffLimitPerIndex: a share's pod lost for another reason runs again
COMPLETE_FOLDER = "on-job-complete"  # not read by `kubectl apply -f DIR` (no -R)
_NAME_ROOM = 63 - len("-0123456789abcdef-complete")  # the api's part of a Job's name


@dataclass(frozen=True)
class ClusterJob:
    """One submission of one BatchAPI, cut into batches, for a cluster."""

    api: str
    job_id: str
    batches: tuple[str, ...]
    workers: int
    job_spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.api[:_NAME_ROOM].rstrip('-')}-{self.job_id}"

    @property
    def shares(self) -> int:
        return min(self.workers, len(self.batches))


def job_id_of(api: str, image: str, submission: Submission, batches: Sequence[str]) -> str:
    """16 hex digits from what the job runs: the same submission on the same image is the same job
    (a second `kubectl apply` changes nothing), another one is a Job of its own."""
    h = hashlib.sha256(json.dumps([api, image, submission.workers, submission.config]).encode())
    for batch in batches:
        h.update(b"\0" + batch.encode())
    return h.hexdigest()[:16]


def cluster_job(spec: APISpec, image: str, submission: Submission, batches: Sequence[str],
                start_time: str) -> ClusterJob:
    """The job of `submission` (its batches already cut); `start_time`: the export's, ISO 8601."""
    job_id = job_id_of(spec.name, image, submission, batches)
    job_spec = {"job_id": job_id, "api_name": spec.name, "config": submission.config,
                "workers": submission.workers, "total_batch_count": len(batches), "start_time": start_time}
    return ClusterJob(spec.name, job_id, tuple(batches), submission.workers, job_spec)


def batch_key(index: int) -> str:
    return batch_worker.batch_file(index)


def config_map(spec: APISpec, job: ClusterJob, options: ExportOptions) -> dict[str, Any]:
    """The job's batches and job_spec; ExportError past Kubernetes' 1 MiB."""
    data = {JOB_SPEC_KEY: json.dumps(job.job_spec, sort_keys=True)}
    data.update((batch_key(i), batch) for i, batch in enumerate(job.batches))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    if size > CONFIG_MAP_LIMIT:
        raise ExportError(
            f"batch api {spec.name!r}: the job's {len(job.batches)} batch(es) take {size} bytes, more than a "
            f"ConfigMap holds ({CONFIG_MAP_LIMIT} bytes): submit fewer items per export (split the submission "
            "into several), or give file_path_lister paths of project files, which travel in the image")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec, job, options, job.name),
            "data": data}


def _meta(spec: APISpec, job: ClusterJob, options: ExportOptions, name: str) -> dict[str, Any]:
    meta = metadata(spec, options, name)
    meta["labels"] = job_labels(spec, job)
    return meta


def job_labels(spec: APISpec, job: ClusterJob) -> dict[str, str]:
    return {**labels(spec), "app.kubernetes.io/component": "batch-worker", "app.kubernetes.io/instance": job.job_id}


def worker_container(spec: APISpec, image: str, env: dict[str, str], args: list[str],
                     from_secret: Collection[str] = ()) -> dict[str, Any]:
    """The API's container (manifests.container: env, resources, security context, /tmp) running
    the batch worker instead of the server: no port, no probes, no preStop."""
    c = container(spec, image, env, "deployment", from_secret)
    for serving_only in ("ports", "readinessProbe", "startupProbe", "livenessProbe", "lifecycle"):
        c.pop(serving_only, None)
    c["command"] = ["python", "-m", "predictor_runtime.batch_worker"]
    c["args"] = ["--spec", layout.SPEC_IN_IMAGE, "--batches", JOB_DIR, *args]
    c["volumeMounts"] = [*c["volumeMounts"], {"name": "job", "mountPath": JOB_DIR, "readOnly": True}]
    c["securityContext"] = security_context()
    return c


def _pod(spec: APISpec, job: ClusterJob, c: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": job_labels(spec, job)},
        "spec": {
            "restartPolicy": "Never",  # a failed pod is the Job's to count (podFailurePolicy)
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [c],
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "job", "configMap": {"name": job.name}}],
        },
    }


def indexed_job(spec: APISpec, image: str, env: dict[str, str], job: ClusterJob, options: ExportOptions,
                from_secret: Collection[str] = ()) -> dict[str, Any]:
    args = ["--shares", str(job.shares), "--attempts", str(MAX_ATTEMPTS)]
    c = worker_container(spec, image, env, args, from_secret)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(spec, job, options, job.name),
        "spec": {
            "completionMode": "Indexed",
            "completions": job.shares,
            "parallelism": job.workers,
            "backoffLimitPerIndex": POD_RETRIES,
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {
                    "containerName": c["name"], "operator": "In",
                    "values": [batch_worker.STARTUP_FAILED, batch_worker.BATCHES_FAILED]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": _pod(spec, job, c),
        },
    }


def completion_job(spec: APISpec, image: str, env: dict[str, str], job: ClusterJob, options: ExportOptions,
                   from_secret: Collection[str] = ()) -> dict[str, Any]:
    c = worker_container(spec, image, env, ["--on-job-complete"], from_secret)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(spec, job, options, f"{job.name}-complete"),
        "spec": {"completions": 1, "backoffLimit": POD_RETRIES, "template": _pod(spec, job, c)},
    }


def job_files(given: list[str], batch_apis: list[str]) -> dict[str, Path]:
    """`--job API=FILE` values (a bare FILE when the configuration has one BatchAPI) -> {api: file}."""
    out: dict[str, Path] = {}
    for value in given:
        api, sep, file = value.partition("=")
        if not sep:
            if len(batch_apis) != 1:
                raise ExportError(f"--job {value}: say which BatchAPI runs it, as --job API={value} "
                                  f"(BatchAPIs here: {', '.join(batch_apis) or 'none'})")
            api, file = batch_apis[0], value
        if api in out:
            raise ExportError(f"--job {api}=...: given twice (one job per BatchAPI and export)")
        out[api] = Path(file)
    return out


def batch_apis_with_jobs(apis: Sequence[APISpec], jobs: Mapping[str, object]) -> list[APISpec]:
    """The BatchAPIs of `apis`, each with its job in `jobs` (api name -> submission); ExportError
    for a BatchAPI without one, or a job of an api that is not a BatchAPI here."""
    batch = [a for a in apis if a.kind == "BatchAPI"]
    names = {a.name for a in batch}
    unknown = sorted(set(jobs) - names)
    if unknown:
        have = f"its BatchAPIs: {', '.join(sorted(names))}" if names else "it defines no BatchAPI"
        raise ExportError(f"--job {unknown[0]}=...: the configuration has no BatchAPI {unknown[0]!r} ({have})")
    missing = [a for a in batch if a.name not in jobs]
    if missing:
        a = missing[0]
        raise ExportError(
            f"{a.source_file}:{a.source_line}: batch api {a.name!r}: give the job to run in the cluster with "
            f"--job {a.name}=SUBMISSION.json (Cortex's job request body: workers and item_list, "
            "file_path_lister or delimited_files); a cluster gets a BatchAPI's job as an Indexed Job, not its "
            "submission endpoint")
    return batch
