"""APISpec -> Kubernetes manifests for one API (pure): the `deployment` and `knative` flavors.

deployment: apps/v1 Deployment + v1 Service + networking.k8s.io/v1 Ingress +
autoscaling/v2 HorizontalPodAutoscaler (CPU utilisation for legacy `kind: api`,
the pods' in-flight gauge for RealtimeAPI concurrency autoscaling).
knative: one serving.knative.dev/v1 Service whose KPA annotations carry
Cortex's concurrency autoscaling fields.

Both run the same container (container() below): the API's image from
`cortexd build`, port 8888, probes on /healthz, non-root on a read-only root
filesystem with an emptyDir /tmp. Targets Kubernetes TARGET_KUBERNETES and
Knative Serving TARGET_KNATIVE; tests validate the output against that
Kubernetes minor's schemas. What a field turns into is listed field by field
in report.py; keep the two in step (tests/unit/test_kube_manifests.py checks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cortexd.kube import layout
from cortexd.spec.model import APISpec
from cortexd.spec.units import surge_as_written

TARGET_KUBERNETES = "1.30"
TARGET_KNATIVE = "1.15"
FLAVORS = ("deployment", "knative")
Flavor = Literal["deployment", "knative"]

# Knative's default `container-concurrency-max-limit` (config-defaults); above it the webhook refuses
KNATIVE_MAX_CONTAINER_CONCURRENCY = 1000
# Cortex's autoscaler decides every 10 s; its up/down factors bound one decision
CORTEX_TICK_SECONDS = 10
SERVICE_PORT = 80


@dataclass(frozen=True)
class ExportOptions:
    flavor: Flavor = "deployment"
    namespace: str | None = None
    ingress_class: str | None = None  # None: the cluster's default IngressClass
    gateway: str | None = None  # the Gateway traffic splitters' HTTPRoutes attach to (None: "cortexd")


def cpu_quantity(cores: float) -> str:
    millis = round(cores * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(size: int) -> str:
    for unit, factor in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def number_text(value: float) -> str:
    """1.0 -> '1', 2.5 -> '2.5' (annotation values are strings)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def concurrency_quantity(value: float) -> str:
    """A Kubernetes quantity for an average in-flight count: 1 -> '1', 1.5 -> '1500m'."""
    millis = round(value * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def seconds_text(seconds: float) -> str:
    return f"{math.ceil(seconds)}s"


def labels(spec: APISpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/component": "predictor"}


def metadata(spec: APISpec, options: ExportOptions, name: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name or spec.name, "labels": labels(spec)}
    if options.namespace:
        meta["namespace"] = options.namespace
    return meta


def resources(spec: APISpec) -> dict[str, Any]:
    """compute.cpu -> cpu request; compute.mem -> memory request and limit; compute.gpu -> nvidia.com/gpu."""
    c = spec.compute
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if c.cpu:
        requests["cpu"] = cpu_quantity(c.cpu)
    if c.mem:
        requests["memory"] = limits["memory"] = memory_quantity(int(c.mem))
    if c.gpu:
        limits["nvidia.com/gpu"] = str(c.gpu)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": layout.UID,
        "runAsGroup": layout.UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# what a Secret's data keys may be (Kubernetes' ConfigMap/Secret key rule)
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def dotenv_secret_name(spec: APISpec) -> str:
    return f"{spec.name}-dotenv"


def secret_keys(dotenv: Mapping[str, str]) -> list[str]:
    """The project's .env keys that go into the API's Secret (those Kubernetes allows as keys)."""
    return [k for k in dotenv if SECRET_KEY.match(k)]


def dotenv_secret(spec: APISpec, values: Mapping[str, str], options: ExportOptions) -> dict[str, Any] | None:
    """The Secret that holds the project's .env values (None: no .env); the container reads each
    with env valueFrom.secretKeyRef, so they are not in the Deployment / Knative Service."""
    if not values:
        return None
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": metadata(spec, options, dotenv_secret_name(spec)),
            "type": "Opaque", "stringData": dict(values)}


def env_entries(spec: APISpec, env: Mapping[str, str], from_secret: Collection[str]) -> list[dict[str, Any]]:
    secret = dotenv_secret_name(spec)
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}} if k in from_secret
            else {"name": k, "value": v} for k, v in env.items()]


def container(spec: APISpec, image: str, env: dict[str, str], flavor: Flavor,
              from_secret: Collection[str] = ()) -> dict[str, Any]:
    """The API's container, the same in both flavors but for what Knative does not allow.
    `from_secret`: the env names read from the API's .env Secret (dotenv_secret)."""
    port_name = "http1" if flavor == "knative" else "http"  # Knative wants http1 (or h2c) here
    probe = {"httpGet": {"path": "/healthz", "port": layout.PORT}}
    c: dict[str, Any] = {
        "name": "api",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": port_name, "containerPort": layout.PORT, "protocol": "TCP"}],
    }
    if env:
        c["env"] = env_entries(spec, env, from_secret)
    res = resources(spec)
    if res:
        c["resources"] = res
    c["readinessProbe"] = {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}
    if flavor == "deployment":
        # the runtime listens only once the predictor is initialised: give model loading 5 minutes
        c["startupProbe"] = {**probe, "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 60}
        c["livenessProbe"] = {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
        # endpoints and ingresses take a moment to stop routing here: keep serving meanwhile
        c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(layout.PRESTOP_SLEEP_SECONDS)]}}}
    else:
        # Knative has no startupProbe: liveness tolerates the same 5 minutes of start-up
        c["livenessProbe"] = {**probe, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 30}
    c["securityContext"] = security_context()
    c["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    return c


def pod_annotations() -> dict[str, str]:
    """Where a Prometheus scraping by annotation finds the in-flight gauge."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(layout.PORT),
        "prometheus.io/path": "/metrics",
    }


def deployment(spec: APISpec, image: str, env: dict[str, str], options: ExportOptions,
               from_secret: Collection[str] = ()) -> dict[str, Any]:
    u = spec.update_strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(spec, options),
        "spec": {
            "replicas": spec.autoscaling.init_replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": spec.name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge_as_written(u.max_surge),
                                  "maxUnavailable": surge_as_written(u.max_unavailable)},
            },
            "template": {
                "metadata": {"labels": labels(spec), "annotations": pod_annotations()},
                "spec": {
                    "terminationGracePeriodSeconds": layout.TERMINATION_GRACE_SECONDS,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(spec, image, env, "deployment", from_secret)],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(spec: APISpec, options: ExportOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, options),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": spec.name},
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def ingress(spec: APISpec, options: ExportOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "rules": [{"http": {"paths": [{
            "path": spec.networking.endpoint,
            "pathType": "Exact",
            "backend": {"service": {"name": spec.name, "port": {"number": SERVICE_PORT}}},
        }]}}],
    }
    if options.ingress_class:
        body = {"ingressClassName": options.ingress_class, **body}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": metadata(spec, options), "spec": body}


def hpa_behavior(spec: APISpec) -> dict[str, Any]:
    """Cortex's stabilization periods and factors as HPA behavior (per 10 s decision, at least one pod)."""
    a = spec.autoscaling
    up_percent = max(1, round((a.max_upscale_factor - 1) * 100))
    down_percent = max(1, min(100, round((1 - a.max_downscale_factor) * 100)))
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": int(a.upscale_stabilization_period),
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": up_percent, "periodSeconds": CORTEX_TICK_SECONDS},
                {"type": "Pods", "value": 1, "periodSeconds": CORTEX_TICK_SECONDS},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": int(a.downscale_stabilization_period),
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": down_percent, "periodSeconds": CORTEX_TICK_SECONDS},
                {"type": "Pods", "value": 1, "periodSeconds": CORTEX_TICK_SECONDS},
            ],
        },
    }


def hpa(spec: APISpec, options: ExportOptions) -> dict[str, Any]:
    a = spec.autoscaling
    if a.target_cpu_utilization is not None:
        metric = {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": a.target_cpu_utilization}}}
    else:
        metric = {"type": "Pods", "pods": {
            "metric": {"name": layout.INFLIGHT_METRIC},
            "target": {"type": "AverageValue",
                       "averageValue": concurrency_quantity(a.target_replica_concurrency)},
        }}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(spec, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [metric],
            "behavior": hpa_behavior(spec),
        },
    }


def knative_container_concurrency(spec: APISpec) -> int:
    return min(spec.autoscaling.max_replica_concurrency, KNATIVE_MAX_CONTAINER_CONCURRENCY)


def knative_service(spec: APISpec, image: str, env: dict[str, str], options: ExportOptions,
                    from_secret: Collection[str] = ()) -> dict[str, Any]:
    a = spec.autoscaling
    if a.target_cpu_utilization is not None:
        # legacy `kind: api` scaled on CPU: Knative's HPA class does that
        scaling = {
            "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "cpu",
            "autoscaling.knative.dev/target": str(a.target_cpu_utilization),
        }
    else:
        scaling = {
            "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/metric": "concurrency",
            "autoscaling.knative.dev/target": number_text(a.target_replica_concurrency),
            # Cortex scales to exactly avg/target; Knative's default aims at 70% of the target
            "autoscaling.knative.dev/target-utilization-percentage": "100",
        }
    annotations = {
        **scaling,
        "autoscaling.knative.dev/min-scale": str(a.min_replicas),
        "autoscaling.knative.dev/max-scale": str(a.max_replicas),
        "autoscaling.knative.dev/initial-scale": str(a.init_replicas),
    }
    if a.target_cpu_utilization is None:  # KPA settings: the HPA class has its own
        annotations["autoscaling.knative.dev/window"] = seconds_text(a.window)
        annotations["autoscaling.knative.dev/scale-down-delay"] = seconds_text(a.downscale_stabilization_period)
    meta = metadata(spec, options)
    if spec.networking.api_gateway == "none":
        meta["labels"]["networking.knative.dev/visibility"] = "cluster-local"
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"template": {
            "metadata": {"labels": labels(spec), "annotations": {**annotations, **pod_annotations()}},
            "spec": {
                "containerConcurrency": knative_container_concurrency(spec),
                "timeoutSeconds": layout.REQUEST_TIMEOUT_SECONDS,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "containers": [container(spec, image, env, "knative", from_secret)],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        }},
    }


def manifests(spec: APISpec, image: str, env: dict[str, str], options: ExportOptions,
              from_secret: Collection[str] = ()) -> list[dict[str, Any]]:
    """Every object of one API, in apply order (the .env Secret, when any, is written apart)."""
    if options.flavor == "knative":
        return [knative_service(spec, image, env, options, from_secret)]
    objects = [deployment(spec, image, env, options, from_secret), service(spec, options)]
    if spec.networking.api_gateway != "none":  # `none`: reachable inside the cluster only
        objects.append(ingress(spec, options))
    return objects + [hpa(spec, options)]
