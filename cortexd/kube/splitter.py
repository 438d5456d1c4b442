"""SplitterSpec -> a Gateway API HTTPRoute (pure): `cortexd export kubernetes` for a TrafficSplitter.

Cortex 0.23 made an Istio VirtualService per splitter; the portable form today is a
gateway.networking.k8s.io/v1 HTTPRoute, which every Gateway API implementation serves
(Envoy Gateway, Istio, Cilium, NGINX Gateway Fabric, ...). The route attaches to a
Gateway (`--gateway NAME`, parentRefs), matches the splitter's endpoint exactly, and sends
each request to one backendRef, by weight: the Service of each api, as manifests.service
writes it (named after the api, port SERVICE_PORT). A shadow api is a RequestMirror filter
with its percent. Targets the Gateway API's standard channel GATEWAY_API (RequestMirror's
`percent` is standard from v1.3); tests validate the route against that release's CRD schema.
"""

from __future__ import annotations

from typing import Any

from cortexd.kube.manifests import SERVICE_PORT, ExportOptions
from cortexd.spec.model import SplitterSpec

GATEWAY_API = "v1.6.1"  # the Gateway API release (standard channel) the routes are validated against
GATEWAY_API_MIN = "v1.3.0"  # the oldest standard channel with every field written (RequestMirror percent)
DEFAULT_GATEWAY = "cortexd"


def _backend(name: str) -> dict[str, Any]:
    return {"kind": "Service", "name": name, "port": SERVICE_PORT}


def http_route(spec: SplitterSpec, options: ExportOptions) -> dict[str, Any]:
    """The HTTPRoute of one traffic splitter."""
    meta: dict[str, Any] = {"name": spec.name, "labels": {"app.kubernetes.io/name": spec.name,
                                                           "app.kubernetes.io/component": "traffic-splitter"}}
    if options.namespace:
        meta["namespace"] = options.namespace
    rule: dict[str, Any] = {
        "matches": [{"path": {"type": "Exact", "value": spec.networking.endpoint}}],
        "backendRefs": [{**_backend(t.name), "weight": t.weight} for t in spec.primaries],
    }
    shadow = spec.shadow
    if shadow is not None:
        rule["filters"] = [{"type": "RequestMirror",
                            "requestMirror": {"backendRef": _backend(shadow.name), "percent": shadow.weight}}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {"parentRefs": [{"name": options.gateway or DEFAULT_GATEWAY}], "rules": [rule]},
    }


def splitter_notes(spec: SplitterSpec, options: ExportOptions, exported: set[str]) -> list[str]:
    """What the cluster needs for the route to serve; `exported`: the apis written beside it."""
    gateway = options.gateway or DEFAULT_GATEWAY
    notes = [
        f"the cluster needs a Gateway API implementation with the Gateway API CRDs (standard channel "
        f"{GATEWAY_API_MIN} or later), and a Gateway named {gateway!r}"
        + (f" in namespace {options.namespace!r}" if options.namespace else "")
        + " whose listeners allow this route (choose it with --gateway)",
    ]
    missing = [t.name for t in spec.targets if t.name not in exported]
    if missing:
        notes.append(f"api(s) {', '.join(missing)} are not in this configuration: their Services (port "
                     f"{SERVICE_PORT}) must exist in the cluster, as `cortexd export kubernetes` writes them")
    if options.flavor == "knative":
        notes.append("with --flavor knative the backendRefs name the Knative Services' Kubernetes Services "
                     "(ExternalName to the Knative ingress), which Gateway API implementations support only "
                     "as an extension; the deployment flavor gives plain ClusterIP Services")
    if spec.networking.api_gateway == "none":
        notes.append("networking.api_gateway: none: attach the route to a Gateway that is reachable inside "
                     "the cluster only")
    if spec.shadow is not None:
        notes.append(f"api {spec.shadow.name!r} is a RequestMirror (its answers discarded by the Gateway); "
                     "the implementation must support the Extended RequestMirror filter")
    return notes
