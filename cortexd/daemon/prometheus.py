"""The daemon's Prometheus metrics: its status snapshot and the gateway's counters, read at scrape time.

The control API (control.py) serves them at GET /metrics on the control socket and on
the admin port. MetricsCollector turns the status snapshot (cortexd/status.py: replicas
by state, in-flight counts, the autoscaler's count and bounds, GPUs) plus each API's
cumulative counters from the gateway (cortexd/gateway/metrics.py APIMetrics and
Monitor: codes, latency histograms, monitoring), and each traffic splitter's (its
weights, the share each api takes now, the codes and latency per api), and each BatchAPI's jobs, into
prometheus-client metric families, in a private CollectorRegistry (never the process-global one).

BatchAPI series stay few whatever a BatchAPI's history: per job (label job_id) only for the jobs the
snapshot shows one by one (core.batch_jobs.shown_jobs: at most 20 not ended, and the last 5 that
ended in the last 10 minutes, so a scrape sees a job's final counts before its series go); per
BatchAPI, jobs by status (Cortex's ten values) and totals over every job it ran (batches succeeded
and failed, items succeeded), counters that never lose a job.
prometheus-client is imported when a scrape first needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from cortexd.gateway.metrics import BOUNDS, APIMetrics, Monitor
from cortexd.status import Status

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric


class MetricsCollector:
    """A prometheus-client collector reading the daemon's state at scrape time.

    `snapshot()` returns the status snapshot (cortexd.status.Status, the control API's /status);
    `api_metrics()` returns each API's (APIMetrics, Monitor | None) for the
    cumulative histograms and codes the snapshot summarises away.
    """

    def __init__(self, snapshot: Callable[[], Status],
                 api_metrics: Callable[[], Iterable[tuple[str, APIMetrics, Monitor | None]]],
                 unrouted: Callable[[], int] = lambda: 0,
                 split_metrics: Callable[[], Iterable[tuple[str, str, APIMetrics]]] = lambda: ()):
        self._snapshot = snapshot
        self._api_metrics = api_metrics
        self._unrouted = unrouted
        self._split_metrics = split_metrics

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        snap = self._snapshot()
        yield from self._request_families()
        yield from _replica_families(snap)
        yield from _gpu_families(snap)
        yield from self._splitter_families(snap)
        yield from _batch_families(snap)
        yield CounterMetricFamily("cortexd_unrouted_requests",
                                  "Requests for a path no API serves (404)", value=self._unrouted())

    def _request_families(self) -> Iterator[Metric]:
        """Cumulative request codes, latency histograms and monitoring, from the gateway's counters."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        requests = CounterMetricFamily(
            "cortexd_requests", "Requests answered by the gateway, by API and HTTP status code",
            labels=["api", "code"])
        latency = HistogramMetricFamily(
            "cortexd_request_duration_seconds", "Gateway request latency (arrival to response)",
            labels=["api"])
        predictions = CounterMetricFamily(
            "cortexd_monitoring_predictions", "Predictions read for monitoring", labels=["api"])
        unreadable = CounterMetricFamily(
            "cortexd_monitoring_unreadable", "Responses whose prediction could not be read",
            labels=["api"])
        classes = CounterMetricFamily(
            "cortexd_monitoring_class", "Predictions per class (classification monitoring)",
            labels=["api", "class"])
        values = GaugeMetricFamily(
            "cortexd_monitoring_value", "Monitored regression value: min, max, avg, p50, p99",
            labels=["api", "stat"])
        for name, metrics, monitor in self._api_metrics():
            for code, n in sorted(metrics.codes.items()):
                requests.add_metric([name, str(code)], n)
            latency.add_metric([name], _buckets(metrics), metrics.sum_s)
            if monitor is None:
                continue
            summary = monitor.summary()
            predictions.add_metric([name], summary["predictions"])
            unreadable.add_metric([name], summary["unreadable"])
            if monitor.model_type == "classification":
                for label, n in sorted(monitor.class_counts.items()):
                    classes.add_metric([name, label], n)
                if monitor.other_classes:
                    classes.add_metric([name, "_other"], monitor.other_classes)
            else:
                for stat in ("min", "max", "avg", "p50", "p99"):
                    if summary[stat] is not None:
                        values.add_metric([name, stat], summary[stat])
        yield from (requests, latency, predictions, unreadable, classes, values)


    def _splitter_families(self, snap: Status) -> Iterator[Metric]:
        """Per traffic splitter api: its weight, its share now, the codes and latency of what it was sent."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        weight = GaugeMetricFamily("cortexd_splitter_weight", "Configured weight of a traffic splitter's api "
                                   "(a shadow: the percent of requests copied)", labels=["splitter", "api", "shadow"])
        share = GaugeMetricFamily("cortexd_splitter_share_percent", "Percent of a splitter's requests an api "
                                  "takes now (the weights of apis that are down go to the others)",
                                  labels=["splitter", "api"])
        dropped = CounterMetricFamily("cortexd_splitter_shadow_dropped", "Copies not sent to a shadow api "
                                      "(down or at its concurrency limit)", labels=["splitter", "api"])
        refused = CounterMetricFamily("cortexd_splitter_refused", "Requests answered 503: no api of the "
                                      "splitter could take them", labels=["splitter"])
        for split in snap.splitters:
            refused.add_metric([split.name], split.refused)
            for t in split.targets:
                weight.add_metric([split.name, t.name, str(t.shadow).lower()], t.weight)
                share.add_metric([split.name, t.name], t.share)
                if t.shadow:
                    dropped.add_metric([split.name, t.name], t.dropped)
        requests = CounterMetricFamily("cortexd_splitter_requests", "Requests a traffic splitter sent each api, "
                                       "by HTTP status code", labels=["splitter", "api", "code"])
        latency = HistogramMetricFamily("cortexd_splitter_request_duration_seconds",
                                        "Latency of the requests a splitter sent each api", labels=["splitter", "api"])
        for splitter, api, metrics in self._split_metrics():
            for code, n in sorted(metrics.codes.items()):
                requests.add_metric([splitter, api, str(code)], n)
            latency.add_metric([splitter, api], _buckets(metrics), metrics.sum_s)
        yield from (weight, share, dropped, refused, requests, latency)


def _buckets(metrics: APIMetrics) -> list[tuple[str, float]]:
    """Cumulative histogram buckets, as Prometheus has them."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, n in zip((*BOUNDS, math.inf), metrics.buckets):
        cumulative += n
        buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
    return buckets


def _replica_families(snap: Status) -> Iterator[Metric]:
    """In-flight requests, replicas by state, the autoscaler's count and bounds, per API."""
    from prometheus_client.core import GaugeMetricFamily

    in_flight = GaugeMetricFamily("cortexd_in_flight_requests",
                                  "Requests in progress at the gateway", labels=["api"])
    replicas = GaugeMetricFamily("cortexd_replicas", "Replicas by state", labels=["api", "state"])
    recommended = GaugeMetricFamily(
        "cortexd_autoscaler_recommended_replicas",
        "Replica count the autoscaler requests (the desired count)", labels=["api"])
    bounds = GaugeMetricFamily("cortexd_replicas_bound", "min_replicas and max_replicas",
                               labels=["api", "bound"])
    replica_in_flight = GaugeMetricFamily(
        "cortexd_replica_in_flight_requests", "Requests in progress per replica",
        labels=["api", "replica"])
    for api in snap.apis:
        name = api.name
        in_flight.add_metric([name], api.in_flight)
        r = api.replicas
        states = {"ready": 0, "starting": 0, "draining": 0, "stopping": 0}
        for rep in api.replica_list:
            states[rep.state] = states.get(rep.state, 0) + 1
            replica_in_flight.add_metric([name, rep.id], rep.in_flight)
        states["pending"] = max(0, r.requested - r.ready - r.starting)
        for state, n in sorted(states.items()):
            replicas.add_metric([name, state], n)
        recommended.add_metric([name], r.requested)
        bounds.add_metric([name, "min"], r.min)
        bounds.add_metric([name, "max"], r.max)
    yield from (in_flight, replica_in_flight, replicas, recommended, bounds)


def _batch_families(snap: Status) -> Iterator[Metric]:
    """Per BatchAPI: jobs by status, workers, totals over all its jobs; per job shown: batches by
    state, workers, items and status."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    jobs = GaugeMetricFamily("cortexd_batch_jobs", "A BatchAPI's jobs by status (Cortex's values), all time",
                             labels=["api", "status"])
    workers = GaugeMetricFamily("cortexd_batch_workers", "A BatchAPI's job workers running", labels=["api"])
    batches = CounterMetricFamily("cortexd_batch_batches", "Batches of a BatchAPI's jobs that succeeded or "
                                  "failed (after their attempts), all jobs", labels=["api", "outcome"])
    items = CounterMetricFamily("cortexd_batch_items_succeeded", "Items in the batches that succeeded, all jobs",
                                labels=["api"])
    job_batches = GaugeMetricFamily("cortexd_batch_job_batches", "A job's batches by state (jobs not ended and "
                                    "the last few ended)", labels=["api", "job_id", "state"])
    job_workers = GaugeMetricFamily("cortexd_batch_job_workers", "A job's workers running",
                                    labels=["api", "job_id"])
    job_items = CounterMetricFamily("cortexd_batch_job_items_succeeded", "Items in a job's batches that "
                                    "succeeded", labels=["api", "job_id"])
    job_status = GaugeMetricFamily("cortexd_batch_job_status", "1 for a job's status (Cortex's value)",
                                   labels=["api", "job_id", "status"])
    for b in snap.batch_apis:
        for status, n in b.jobs_by_status.items():
            jobs.add_metric([b.name, status], n)
        workers.add_metric([b.name], b.workers_running)
        batches.add_metric([b.name, "succeeded"], b.batches_succeeded)
        batches.add_metric([b.name, "failed"], b.batches_failed)
        items.add_metric([b.name], b.items_succeeded)
        for job in b.job_list:
            for state in ("queued", "running", "succeeded", "failed"):
                job_batches.add_metric([b.name, job.job_id, state], getattr(job, state))
            job_workers.add_metric([b.name, job.job_id], job.workers_running)
            job_items.add_metric([b.name, job.job_id], job.items_succeeded)
            job_status.add_metric([b.name, job.job_id, job.status], 1)
    yield from (jobs, workers, batches, items, job_batches, job_workers, job_items, job_status)


def _gpu_families(snap: Status) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    gpu_util = GaugeMetricFamily("cortexd_gpu_utilization_percent",
                                 "GPU utilization over NVML's last sample period", labels=["gpu"])
    gpu_used = GaugeMetricFamily("cortexd_gpu_memory_used_bytes", "GPU memory in use",
                                 labels=["gpu"])
    gpu_total = GaugeMetricFamily("cortexd_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
    for d in snap.gpus.devices if snap.gpus is not None else ():
        gpu = str(d.index)
        if d.utilization is not None:
            gpu_util.add_metric([gpu], d.utilization)
        if d.memory_used is not None:
            gpu_used.add_metric([gpu], d.memory_used)
        if d.memory_total is not None:
            gpu_total.add_metric([gpu], d.memory_total)
    yield from (gpu_util, gpu_used, gpu_total)


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A private CollectorRegistry holding only cortexd's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) of the Prometheus text format for `registry`."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
