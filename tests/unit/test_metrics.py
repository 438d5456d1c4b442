"""gateway.metrics: rolling request counters, latency quantiles, prediction monitoring; daemon.prometheus:
their exposition."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from cortexd.daemon.prometheus import MetricsCollector, build_registry, exposition
from cortexd.gateway.metrics import APIMetrics, Monitor, quantile
from cortexd.status import Status


def test_codes_classes_and_rate_over_whole_seconds():
    m = APIMetrics()
    for i in range(30):  # 30 requests over 3 seconds
        m.record(200, 0.002, 100.0 + i / 10)
    m.record(404, 0.001, 102.5)
    m.record(503, 0.001, 102.6)
    m.record(302, 0.001, 102.7)
    s = m.summary(103.2)
    assert (s["total"], s["2xx"], s["4xx"], s["5xx"]) == (33, 30, 1, 1)
    assert s["codes"] == {"200": 30, "302": 1, "404": 1, "503": 1}
    assert s["requests_per_s"] == 3.3  # 33 requests in the last 10 whole seconds
    # 70 s later the window is empty: rate 0, no quantiles, totals kept
    later = m.summary(173.0)
    assert later["requests_per_s"] == 0 and later["p50_ms"] is None and later["total"] == 33


def test_latency_quantiles_come_from_the_last_minute():
    m = APIMetrics()
    for _ in range(99):
        m.record(200, 0.004, 10.0)
    m.record(200, 0.9, 10.5)
    s = m.summary(11.0)
    assert 3.0 <= s["p50_ms"] <= 5.0  # bucket (3 ms, 5 ms]
    assert 3.0 <= s["p99_ms"] <= 5.0
    m.record(200, 0.9, 12.0)
    m.record(200, 0.9, 12.0)
    assert 700 <= m.summary(12.0)["p99_ms"] <= 1000
    # a slot reused a minute later starts from zero
    m.record(200, 0.05, 72.0)  # second 72 reuses second 12's slot
    s = m.summary(72.0)
    assert 30 <= s["p50_ms"] <= 50 and s["total"] == 103


def test_quantile_edges():
    assert quantile([0, 0, 0], 0.5) is None
    counts = [0] * 36
    counts[-1] = 5  # beyond the last bound (60 s)
    assert quantile(counts, 0.99) == 60.0


def test_classification_counts_top_20_then_more():
    mon = Monitor("classification")
    for i in range(25):
        for _ in range(i + 1):
            mon.offer(json.dumps(f"class-{i:02d}").encode())
    mon.offer(b"setosa")  # text/plain prediction
    mon.offer(b"[1, 2]")  # not a class
    mon.offer(b"\xff\xfe")  # not text
    s = mon.summary()
    assert len(s["classes"]) == 20
    assert s["classes"][0] == {"class": "class-24", "count": 25}
    assert s["more_classes"] == 6  # class-00..04 and setosa
    assert s["unreadable"] == 2
    assert s["predictions"] == sum(range(1, 26)) + 1


def test_monitoring_key_picks_the_value_out_of_json_objects():
    mon = Monitor("regression", key="price")
    for v in [1.0, 2.0, 3.0, 4.0, 100.0]:
        mon.offer(json.dumps({"price": v, "other": "x"}).encode())
    mon.offer(b'{"cost": 1}')  # no key
    mon.offer(b'[1]')  # not an object
    mon.offer(b'{"price": "n/a"}')  # not a number
    mon.offer(b"not json")
    s = mon.summary()
    assert (s["min"], s["max"], s["avg"]) == (1.0, 100.0, 22.0)
    assert s["p50"] == 3.0 and s["p99"] == 100.0
    assert (s["predictions"], s["unreadable"]) == (5, 4)


def test_exposition_parses_with_prometheus_client():
    m = APIMetrics()
    for code in (200, 200, 200, 500):
        m.record(code, 0.003, 5.0)
    mon = Monitor("classification")
    mon.offer(b'"cat"')
    snap = Status.from_json({"apis": [{"name": "api", "status": "live", "in_flight": 2,
                                       "replica_list": [{"id": "r1", "state": "ready", "in_flight": 2}],
                      "replicas": {"requested": 3, "ready": 1, "starting": 1, "min": 1, "max": 5}}],
            "gpus": {"devices": [{"index": 0, "utilization": 40, "memory_used": 2**30,
                                  "memory_total": 2**34}]}})
    registry = build_registry(MetricsCollector(lambda: snap, lambda: [("api", m, mon)], lambda: 7))
    body, content_type = exposition(registry)
    assert content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("cortexd_requests_total", (("api", "api"), ("code", "200")))] == 3
    assert samples[("cortexd_requests_total", (("api", "api"), ("code", "500")))] == 1
    assert samples[("cortexd_request_duration_seconds_count", (("api", "api"),))] == 4
    assert samples[("cortexd_request_duration_seconds_bucket", (("api", "api"), ("le", "0.003")))] == 4
    assert samples[("cortexd_request_duration_seconds_bucket", (("api", "api"), ("le", "0.002")))] == 0
    assert samples[("cortexd_in_flight_requests", (("api", "api"),))] == 2
    assert samples[("cortexd_replicas", (("api", "api"), ("state", "pending")))] == 1
    assert samples[("cortexd_autoscaler_recommended_replicas", (("api", "api"),))] == 3
    assert samples[("cortexd_monitoring_class_total", (("api", "api"), ("class", "cat")))] == 1
    assert samples[("cortexd_unrouted_requests_total", ())] == 7
    assert samples[("cortexd_replica_in_flight_requests", (("api", "api"), ("replica", "r1")))] == 2
    assert samples[("cortexd_gpu_utilization_percent", (("gpu", "0"),))] == 40
    assert samples[("cortexd_gpu_memory_used_bytes", (("gpu", "0"),))] == 2**30
