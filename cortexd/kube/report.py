"""Every Cortex field -> where `cortexd export kubernetes` put it, or why not and what to set (pure).

FIELDS is the field mapping, per flavor, keyed by `section.field` as
config_schema.json's $defs name them (python_/tensorflow_/onnx_ predictor and
model definitions folded into `predictor`, `models`, `model`). Each entry says
one of:

    manifest  the value is in the manifests, at the path given
    image     the value is baked into the image (its runtime spec, ENV or files)
    section   a section whose own fields are listed
    report    no equivalent: the text (why, and what to set instead) is a report line

report_lines() renders what was written plus the `report` entries that concern
an API. tests/unit/test_kube_manifests.py checks that every schema field is
here and that each `manifest` / `image` entry holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cortexd.core.batch_jobs import Submission
from cortexd.kube import layout
from cortexd.kube.batch_job import MAX_ATTEMPTS, ClusterJob
from cortexd.kube.manifests import (
    KNATIVE_MAX_CONTAINER_CONCURRENCY,
    TARGET_KNATIVE,
    TARGET_KUBERNETES,
    Flavor,
    knative_container_concurrency,
)
from cortexd.spec.model import APISpec

Kind = Literal["manifest", "image", "section", "report"]


@dataclass(frozen=True)
class Where:
    kind: Kind
    text: str


@dataclass(frozen=True)
class Field:
    key: str  # section.field
    deployment: Where
    knative: Where
    applies_to: Literal["all", "realtime", "legacy"] = "all"

    def where(self, flavor: Flavor) -> Where:
        return self.deployment if flavor == "deployment" else self.knative


def both(kind: Kind, text: str) -> tuple[Where, Where]:
    return Where(kind, text), Where(kind, text)


# the mapping table's one-letter kinds
M: Kind = "manifest"
I: Kind = "image"  # noqa: E741
S: Kind = "section"
R: Kind = "report"
SPEC = "baked into the image's runtime spec (/etc/cortexd/spec.json)"
MONITORING = ("Cortex sent predictions to CloudWatch; nothing in a cluster collects them: log them from "
              "post_predict, or scrape the pods' /metrics")

FIELDS: tuple[Field, ...] = (
    Field("entry.kind", *both(I, "the format; both formats give the same image and manifests")),
    Field("realtime_api.name", *both(M, "metadata.name of every object; the image repository REG/<name>")),
    Field("realtime_api.kind", *both(I, "the format; both formats give the same image and manifests")),
    Field("realtime_api.predictor", *both(S, "")),
    Field("realtime_api.networking", *both(S, "")),
    Field("realtime_api.compute", *both(S, "")),
    Field("realtime_api.monitoring", *both(S, "")),
    Field("realtime_api.autoscaling", *both(S, "")),
    Field("realtime_api.update_strategy", *both(S, "")),
    Field("predictor.type", *both(I, "the image's family (python/onnx/tensorflow) and " + SPEC)),
    Field("predictor.path", *both(I, f"copied into {layout.PROJECT_IN_IMAGE}; " + SPEC)),
    Field("predictor.model_path", *both(I, "a local folder is copied into the image; s3:// stays as "
                                           "it is (credentials from the pod: IRSA or env from a Secret)")),
    Field("predictor.models", *both(S, "")),
    Field("predictor.processes_per_replica", *both(I, "workers per pod; " + SPEC)),
    Field("predictor.threads_per_process", *both(I, "threads per worker; " + SPEC)),
    Field("predictor.config", *both(I, SPEC)),
    Field("predictor.python_path", *both(I, "PYTHONPATH in the image (ENV)")),
    Field("predictor.image", *both(I, "the image `cortexd build` builds on (FROM)")),
    Field("predictor.env", *both(M, "containers[0].env (the project's .env over it, as on one host, from its Secret)")),
    Field("predictor.signature_key", *both(I, SPEC)),
    Field("predictor.server_side_batching", *both(S, "")),
    Field("predictor.tensorflow_serving_image", *both(
        R, "cortexd runs TensorFlow in the predictor's process, so no TensorFlow Serving container "
           "is deployed; the field is ignored (batching and signatures still work)")),
    Field("models.dir", *both(I, "copied into the image when local; " + SPEC)),
    Field("models.paths", *both(I, "copied into the image when local; " + SPEC)),
    Field("models.cache_size", *both(I, SPEC)),
    Field("models.disk_cache_size", *both(I, SPEC + "; the disk cache lives in the pod's /tmp emptyDir")),
    Field("models.signature_key", *both(I, SPEC)),
    Field("model.name", *both(I, SPEC)),
    Field("model.model_path", *both(I, "copied into the image when local; " + SPEC)),
    Field("model.signature_key", *both(I, SPEC)),
    Field("server_side_batching.max_batch_size", *both(I, SPEC)),
    Field("server_side_batching.batch_interval", *both(I, SPEC)),
    Field("networking.endpoint",
          Where(M, "Ingress spec.rules[0].http.paths[0].path (pathType Exact)"),
          Where(R, "Knative routes by host name (http://<api>.<namespace>.<domain>/), not by path; the "
                   "runtime answers on every path, so /<endpoint> works there too")),
    Field("networking.local_port",
          Where(R, f"replaced by the Service (port {80} -> the pod's {layout.PORT}) and the Ingress"),
          Where(R, "replaced by the Knative Service's route")),
    Field("networking.api_gateway",
          Where(M, "public: an Ingress is written; none: no Ingress (the Service is cluster-internal)"),
          Where(M, "none: label networking.knative.dev/visibility=cluster-local")),
    Field("compute.cpu", *both(M, "containers[0].resources.requests.cpu")),
    Field("compute.gpu", *both(M, "containers[0].resources.limits[nvidia.com/gpu] (needs the NVIDIA "
                                  "device plugin)")),
    Field("compute.inf", *both(R, "Inferentia is refused by cortexd (compute.inf must be 0); on EKS the "
                                  "AWS Neuron device plugin's aws.amazon.com/neuron limit is the equivalent")),
    Field("compute.mem", *both(M, "containers[0].resources.requests.memory and limits.memory")),
    Field("monitoring.model_type", *both(R, MONITORING)),
    Field("monitoring.key", *both(R, MONITORING)),
    Field("autoscaling.min_replicas",
          Where(M, "HorizontalPodAutoscaler spec.minReplicas"),
          Where(M, "annotation autoscaling.knative.dev/min-scale")),
    Field("autoscaling.max_replicas",
          Where(M, "HorizontalPodAutoscaler spec.maxReplicas"),
          Where(M, "annotation autoscaling.knative.dev/max-scale")),
    Field("autoscaling.init_replicas",
          Where(M, "Deployment spec.replicas"),
          Where(M, "annotation autoscaling.knative.dev/initial-scale")),
    Field("autoscaling.target_replica_concurrency",
          Where(M, f"HorizontalPodAutoscaler Pods metric {layout.INFLIGHT_METRIC} averageValue (the pods "
                   "export it at /metrics; the HPA reads it only through a Prometheus adapter, e.g. "
                   "prometheus-adapter, serving it on custom.metrics.k8s.io)"),
          Where(M, "annotation autoscaling.knative.dev/target (target-utilization-percentage 100, as Cortex)"),
          "realtime"),
    Field("autoscaling.max_replica_concurrency",
          Where(R, "Kubernetes has no per-pod request limit: over it, requests wait in the pod instead "
                   "of Cortex's 503; use the knative flavor (containerConcurrency) or your ingress "
                   "controller's connection limits"),
          Where(M, "template.spec.containerConcurrency"),
          "realtime"),
    Field("autoscaling.window",
          Where(R, f"an HPA has no averaging window: average in the Prometheus adapter's rule instead, "
                   f"e.g. avg_over_time({layout.INFLIGHT_METRIC}[<window>])"),
          Where(M, "annotation autoscaling.knative.dev/window"),
          "realtime"),
    Field("autoscaling.downscale_stabilization_period",
          Where(M, "HorizontalPodAutoscaler spec.behavior.scaleDown.stabilizationWindowSeconds"),
          Where(M, "annotation autoscaling.knative.dev/scale-down-delay")),
    Field("autoscaling.upscale_stabilization_period",
          Where(M, "HorizontalPodAutoscaler spec.behavior.scaleUp.stabilizationWindowSeconds"),
          Where(R, "the KPA has no scale-up delay: it scales up as soon as the window's average asks; "
                   "to damp bursts raise autoscaling.knative.dev/panic-threshold-percentage or lengthen "
                   "the window")),
    Field("autoscaling.max_downscale_factor",
          Where(M, "HorizontalPodAutoscaler spec.behavior.scaleDown.policies (Percent per 10 s, at least "
                   "one pod)"),
          Where(R, "Knative bounds scale-down cluster-wide only: set max-scale-down-rate = "
                   "1/max_downscale_factor in the config-autoscaler ConfigMap (knative-serving namespace)")),
    Field("autoscaling.max_upscale_factor",
          Where(M, "HorizontalPodAutoscaler spec.behavior.scaleUp.policies (Percent per 10 s, at least "
                   "one pod)"),
          Where(R, "Knative bounds scale-up cluster-wide only: set max-scale-up-rate = max_upscale_factor "
                   "in the config-autoscaler ConfigMap (knative-serving namespace)")),
    Field("autoscaling.downscale_tolerance",
          Where(R, "no per-HPA equivalent in Kubernetes " + TARGET_KUBERNETES + ": the controller-manager's "
                   "--horizontal-pod-autoscaler-tolerance (default 0.1) applies cluster-wide; from 1.33 "
                   "behavior.scaleDown.tolerance (feature gate HPAConfigurableTolerance)"),
          Where(R, "no equivalent in Knative: the KPA has no tolerance band")),
    Field("autoscaling.upscale_tolerance",
          Where(R, "no per-HPA equivalent in Kubernetes " + TARGET_KUBERNETES + ": the controller-manager's "
                   "--horizontal-pod-autoscaler-tolerance (default 0.1) applies cluster-wide; from 1.33 "
                   "behavior.scaleUp.tolerance (feature gate HPAConfigurableTolerance)"),
          Where(R, "no equivalent in Knative: the KPA has no tolerance band")),
    Field("update_strategy.max_surge",
          Where(M, "Deployment spec.strategy.rollingUpdate.maxSurge"),
          Where(R, "Knative starts the new revision beside the old one and moves traffic once it is "
                   "ready; to move it gradually set serving.knative.dev/rollout-duration")),
    Field("update_strategy.max_unavailable",
          Where(M, "Deployment spec.strategy.rollingUpdate.maxUnavailable"),
          Where(R, "Knative keeps the old revision serving until the new one is ready (nothing is "
                   "unavailable); serving.knative.dev/rollout-duration paces the move")),
    # legacy `kind: api` (translated into the fields above by spec.load)
    Field("legacy_api.kind", *both(I, "the format; both formats give the same image and manifests")),
    Field("legacy_api.name", *both(M, "metadata.name of every object; the image repository REG/<name>")),
    Field("legacy_api.endpoint", Where(M, "Ingress spec.rules[0].http.paths[0].path (pathType Exact)"),
          Where(R, "Knative routes by host name, not by path; the runtime answers on every path")),
    Field("legacy_api.python_path", *both(I, "PYTHONPATH in the image (ENV)")),
    Field("legacy_api.python", *both(S, "")),
    Field("legacy_api.python.predictor", *both(I, f"copied into {layout.PROJECT_IN_IMAGE}; " + SPEC)),
    Field("legacy_api.predictor", *both(S, "")),
    Field("legacy_api.predictor.type", *both(I, "the image's family and " + SPEC)),
    Field("legacy_api.predictor.path", *both(I, f"copied into {layout.PROJECT_IN_IMAGE}; " + SPEC)),
    Field("legacy_api.predictor.model", *both(I, "copied into the image when local; " + SPEC)),
    Field("legacy_api.predictor.python_path", *both(I, "PYTHONPATH in the image (ENV)")),
    Field("legacy_api.predictor.metadata", *both(I, SPEC)),
    Field("legacy_api.tracker", *both(S, "")),
    Field("legacy_api.tracker.key", *both(R, MONITORING), "legacy"),
    Field("legacy_api.tracker.model_type", *both(R, MONITORING), "legacy"),
    Field("legacy_api.compute", *both(S, "")),
    Field("legacy_api.compute.min_replicas",
          Where(M, "HorizontalPodAutoscaler spec.minReplicas"),
          Where(M, "annotation autoscaling.knative.dev/min-scale")),
    Field("legacy_api.compute.max_replicas",
          Where(M, "HorizontalPodAutoscaler spec.maxReplicas"),
          Where(M, "annotation autoscaling.knative.dev/max-scale")),
    Field("legacy_api.compute.init_replicas",
          Where(M, "Deployment spec.replicas"),
          Where(M, "annotation autoscaling.knative.dev/initial-scale")),
    Field("legacy_api.compute.target_cpu_utilization",
          Where(M, "HorizontalPodAutoscaler Resource metric cpu averageUtilization"),
          Where(M, "annotations autoscaling.knative.dev/class hpa.autoscaling.knative.dev, metric cpu, "
                   "target")),
    Field("legacy_api.compute.cpu", *both(M, "containers[0].resources.requests.cpu")),
    Field("legacy_api.compute.gpu", *both(M, "containers[0].resources.limits[nvidia.com/gpu]")),
    Field("legacy_api.compute.mem", *both(M, "containers[0].resources.requests.memory and limits.memory")),
    Field("legacy_api.metadata", *both(I, SPEC)),
    Field("legacy_deployment.kind", *both(R, "a legacy `kind: deployment` only grouped APIs: nothing is "
                                             "written for it (group them with --namespace)"), "legacy"),
    Field("legacy_deployment.name", *both(R, "a legacy `kind: deployment` only grouped APIs: nothing is "
                                             "written for it (group them with --namespace)"), "legacy"),
)

# a TrafficSplitter is one HTTPRoute (kube/splitter.py), the same in both flavors
SPLITTER_FIELDS: tuple[Field, ...] = (
    Field("traffic_splitter.name", *both(M, "metadata.name of the HTTPRoute")),
    Field("traffic_splitter.kind", *both(M, "an HTTPRoute (gateway.networking.k8s.io/v1)")),
    Field("traffic_splitter.networking", *both(S, "")),
    Field("traffic_splitter.apis", *both(M, "spec.rules[0].backendRefs, one per api (a shadow: a RequestMirror "
                                            "filter)")),
    Field("splitter_target.name", *both(M, "backendRefs[].name: the api's Service (port 80)")),
    Field("splitter_target.weight", *both(M, "backendRefs[].weight (a shadow: requestMirror.percent)")),
    Field("splitter_target.shadow", *both(M, "spec.rules[0].filters[0]: a RequestMirror to the api's Service")),
)
FIELDS += SPLITTER_FIELDS

# a BatchAPI's job (`--job API=SUBMISSION.json`) is an Indexed Job (kube/batch_job.py), whatever the flavor
_BATCH = {
    "name": "the Job and its ConfigMap are <name>-<job id>; the image REG/<name>",
    "kind": "an Indexed Job (batch/v1) of the job given with --job, its batches in a ConfigMap",
    "predictor": "the same image as a RealtimeAPI's (`cortexd build`), run by predictor_runtime.batch_worker",
    "networking": "no submission endpoint in the cluster: the job is given at export (--job), and "
                  "`kubectl get job` shows its progress",
    "compute": "containers[0].resources of the Job's pods, as a Deployment's",
}
BATCH_FIELDS: tuple[Field, ...] = tuple(Field(f"batch_api.{name}", *both(R, text)) for name, text in _BATCH.items())
FIELDS += BATCH_FIELDS

FIELDS_BY_KEY = {f.key: f for f in FIELDS}

def _concerns(field: Field, spec: APISpec) -> bool:
    legacy = spec.kind == "api"
    if spec.kind == "BatchAPI" or field.key.startswith("batch_api."):
        return spec.kind == "BatchAPI" and field.key.startswith("batch_api.")
    if field.key.startswith(("legacy_", "entry.")):
        return legacy and field.applies_to != "realtime"
    if field.applies_to == "realtime" and spec.autoscaling.target_cpu_utilization is not None:
        return False
    if field.key.startswith("monitoring."):
        return spec.monitoring is not None and not legacy
    if field.key == "predictor.tensorflow_serving_image":
        return spec.predictor.tensorflow_serving_image is not None
    # validation refuses compute.inf > 0: nothing to say about it
    return field.key != "compute.inf"


def report_lines(spec: APISpec, flavor: Flavor, written: str, objects: list[str],
                 notes: list[str]) -> list[str]:
    """What was written for one API, then each field with no equivalent in this flavor."""
    what = "batch api" if spec.kind == "BatchAPI" else "api"
    lines = [f"{what} {spec.name!r}: wrote {written} ({', '.join(objects)})"]
    for note in notes:
        lines.append(f"  note: {note}")
    for field in FIELDS:
        where = field.where(flavor)
        if where.kind == "report" and _concerns(field, spec):
            lines.append(f"  {field.key}: {where.text}")
    return lines


def notes_for(spec: APISpec, flavor: Flavor, dotenv_keys: list[str], image: str,
              model_sizes: list[str], *, secret_file: str | None = None,
              plain: list[str] | None = None) -> list[str]:
    """Conditions of this API that the cluster or the user must know about."""
    notes = [f"image {image} (make it with `cortexd build --registry ... --push`)"]
    notes += model_sizes
    a = spec.autoscaling
    if spec.kind == "BatchAPI":
        pass  # a Job: no autoscaling, no rollout (batch_notes says what it does)
    elif flavor == "deployment":
        if a.target_cpu_utilization is None:
            notes.append(f"the HPA scales on the pods' {layout.INFLIGHT_METRIC} gauge: the cluster needs a "
                         "Prometheus scraping the pods (annotations prometheus.io/*) and a Prometheus "
                         "adapter serving the metric on custom.metrics.k8s.io")
        elif not spec.compute.cpu:
            notes.append("target_cpu_utilization needs a cpu request: set compute.cpu, or the HPA cannot "
                         "compute utilization")
        notes.append("the Deployment's replicas is init_replicas: once the HPA runs, remove it from the "
                     "file before re-applying, or each apply resets the replica count")
    else:
        notes.append("Knative allows no startupProbe or preStop hook: the liveness probe tolerates 5 "
                     "minutes of start-up, and Knative's queue-proxy drains requests before a pod stops")
        if knative_container_concurrency(spec) < a.max_replica_concurrency:
            notes.append(
                f"max_replica_concurrency {a.max_replica_concurrency} is above Knative's default "
                f"container-concurrency-max-limit ({KNATIVE_MAX_CONTAINER_CONCURRENCY}): containerConcurrency "
                f"is {KNATIVE_MAX_CONTAINER_CONCURRENCY}; raise the limit in config-defaults to use more")
    if spec.compute.gpu:
        notes.append("compute.gpu needs the NVIDIA device plugin on the GPU nodes")
    plain = dotenv_keys if plain is None and secret_file is None else (plain or [])
    if secret_file is not None:
        hidden = [k for k in dotenv_keys if k not in plain]
        notes.append(f"the project's .env ({', '.join(hidden)}) is the Secret {spec.name}-dotenv in "
                     f"{secret_file}, read by env valueFrom.secretKeyRef: that file holds the values in plain "
                     f"text, so keep it out of version control (or make the Secret with `kubectl create secret "
                     f"generic {spec.name}-dotenv --from-env-file=.env` and leave the file out)")
    if plain:
        why = " (not valid Secret keys)" if secret_file is not None else ""
        notes.append(f"the project's .env ({', '.join(plain)}) is written into the manifest in plain "
                     f"text{why}: move secrets into a Secret (env valueFrom.secretKeyRef) before committing it")
    remote = [p for p in (spec.predictor.model_path,) if p and "://" in p]
    if remote or (spec.predictor.models and spec.predictor.models.dir and "://" in spec.predictor.models.dir):
        notes.append("s3:// models are read from the pod, unsigned when it has no AWS credentials (public "
                     "buckets); for a private bucket give it credentials (IRSA / workload identity, or AWS_* "
                     "env from a Secret)")
    return notes


def batch_notes(spec: APISpec, job: ClusterJob, submission: Submission, files: list[str],
                complete_file: str) -> list[str]:
    """What a BatchAPI's exported job does, and what to run after it."""
    notes = [f"job {job.job_id}: {len(job.batches)} batch(es) of {submission.batch_size} item(s) in "
             f"{job.shares} share(s): completions {job.shares}, parallelism {job.workers}; pod i runs batches "
             f"i, i+{job.shares}, ..., each tried {MAX_ATTEMPTS} times; `kubectl get job {job.name}` shows "
             "its progress (Complete, or Failed with the failed indexes)",
             f"on_job_complete: once Job {job.name} is complete, apply {complete_file} (`kubectl wait "
             f"--for=condition=complete job/{job.name} --timeout=-1s && kubectl apply -f {complete_file}`); "
             "`kubectl apply -f DIR` leaves that folder out"]
    if files and submission.source == "file_path_lister":
        notes.append(f"the batches name {len(files)} file(s) as the submission wrote them: relative paths are "
                     f"the project's files, in the image at {layout.PROJECT_IN_IMAGE} (the worker's folder); "
                     "absolute paths and file:// URLs of this host do not exist in the pods")
    if submission.source == "delimited_files":
        notes.append(f"delimited_files: the items of {len(files)} file(s) were read here, into the ConfigMap")
    return notes


def targets_line() -> str:
    return (f"manifests target Kubernetes {TARGET_KUBERNETES} (validated against its schemas) and "
            f"Knative Serving {TARGET_KNATIVE}")
