"""Plain-text renderers of the status snapshot (control API /status) for `cortexd get`.

Pure functions: a cortexd.status.Status (or one APIStatus) in, text out. They work on any stdout (pipes,
logs); the live rich view renders the same snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cortexd.core.splitting import percent
from cortexd.status import APIStatus, SplitterStatus, Status
from cortexd.ui.view import fmt_age, fmt_codes, fmt_ms, fmt_number, split_weights


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _replicas(api: APIStatus) -> str:
    r = api.replicas
    text = f"{r.ready}/{r.requested}"
    if r.starting:
        text += f" (+{r.starting} starting)"
    return text


def _requests(api: APIStatus) -> str:
    c = api.requests
    if not c:
        return "-"
    return f"{c.get('2xx', 0)}/{c.get('4xx', 0)}/{c.get('5xx', 0)}"


def _rate(api: APIStatus) -> str:
    rate = api.requests.get("requests_per_s")
    return "-" if rate is None else f"{rate:.1f}"


def _latency(api: APIStatus) -> str:
    c = api.requests
    if c.get("p50_ms") is None:
        return "-"
    return f"{fmt_ms(c['p50_ms'])}/{fmt_ms(c['p99_ms'])}"


def monitoring_table(mon: dict) -> str:
    """Classification: CLASS | COUNT (the 20 most frequent, then "and N more");
    regression: MIN | MAX | AVG | P50 | P99 of the monitored value."""
    key = f", key {mon['key']!r}" if mon.get("key") else ""
    head = (f"monitoring ({mon['model_type']}{key}): {mon['predictions']} predictions, "
            f"{mon['unreadable']} unreadable")
    if not mon["predictions"]:
        return head
    if mon["model_type"] == "classification":
        table = _table(["CLASS", "COUNT"], [[c["class"], str(c["count"])] for c in mon["classes"]])
        if mon.get("more_classes"):
            table += (f"\nand {mon['more_classes']} more "
                      f"({mon.get('other_predictions', 0)} predictions)")
        return f"{head}\n{table}"
    row = [fmt_number(mon[k]) for k in ("min", "max", "avg", "p50", "p99")]
    return (f"{head} (p50/p99 of the last {mon.get('recent', 0)})\n"
            + _table(["MIN", "MAX", "AVG", "P50", "P99"], [row]))


def isolation_lines(isolation: Mapping | None) -> list[str]:
    """Who the replicas run as, which limits hold, the notice when a root daemon could not
    isolate the API, and what replicas have at /mnt/project, where Cortex put the project (the
    backend's isolation(); none before the first replica starts)."""
    if not isolation:
        return []
    lines = [f"runs as:    {isolation.get('runs_as', '?')}"]
    limits = isolation.get("limits") or {}
    if limits:
        lines.append("limits:     " + "; ".join(f"{name} {value}" for name, value in limits.items()))
    if isolation.get("notice"):
        lines.append(f"isolation:  {isolation['notice']}")
    if isolation.get("project_mount"):
        lines.append(f"/mnt/project: {isolation['project_mount']}")
    return lines


def deploy_lines(result: dict) -> list[str]:
    """What `deploy` says of the daemon's answer: each API, traffic splitter and BatchAPI by what
    became of it."""
    kinds = result.get("kinds", {})  # the names that are no RealtimeAPI
    lines = []
    for key, what in (("created", "created"), ("updated", "updated (rolling update)"),
                      ("removed", "removed (no longer in its cortex.yaml)"),
                      ("unchanged", "unchanged"), ("left_alone", "left alone (other projects)")):
        for name in result.get(key, []):
            kind = kinds.get(name, "api")  # only an API's replicas roll
            lines.append(f"{what if kind == 'api' else what.replace(' (rolling update)', '')}: {kind} {name!r}")
    return lines or ["deployed: no apis"]


def api_table(snap: Status) -> str:
    apis = snap.apis
    if not apis and not snap.splitters and not snap.batch_apis:
        return "no apis deployed"
    rows = [
        [a.name, a.status, _replicas(a), str(a.in_flight), _rate(a), _latency(a), _requests(a), a.url]
        for a in apis
    ]
    out = [_table(["API", "STATUS", "READY/REQUESTED", "IN-FLIGHT", "REQ/S", "P50/P99",
                   "2XX/4XX/5XX", "URL"], rows)] if apis else []  # only splitters or BatchAPIs: their tables
    if snap.splitters:
        out += [""] * bool(out) + [splitter_table(snap.splitters)]
    if snap.batch_apis:
        batch_rows = [[b.name, str(b.jobs), str(b.running), b.url] for b in snap.batch_apis]
        out += [""] * bool(out) + [_table(["BATCH API", "JOBS", "RUNNING", "URL"], batch_rows)]
    for a in apis:
        if a.reason:
            first, *rest = a.reason.splitlines()
            out.append(f"\n{a.name}: {first}")
            out.extend(f"  {line}" for line in rest)
        elif a.replicas.pending_reason:
            out.append(f"\n{a.name}: {a.replicas.pending_reason}")
    error = snap.daemon.config_error
    if error:
        out.append(f"\nconfiguration error (the previous configuration keeps serving):\n{error}")
    return "\n".join(out)


def splitter_table(splitters: tuple[SplitterStatus, ...]) -> str:
    """`cortexd get`'s splitters (as Cortex's: name, apis with weights), with status and URL."""
    rows = [[s.name, s.status, split_weights(s), s.url] for s in splitters]
    out = [_table(["TRAFFIC SPLITTER", "STATUS", "APIS", "URL"], rows)]
    for s in splitters:
        out.extend(f"{s.name}: {note}" for note in s.notes)
    return "\n".join(out)


def splitter_detail(splitter: SplitterStatus) -> str:
    """`cortexd get SPLITTER`: per api its weight, share now, status and what the splitter sent it
    (Cortex's columns: apis, weights, status, requested, avg request, 2XX, 5XX; here the p50 of
    the last minute, and 4XX)."""
    rows = []
    for t in splitter.targets:
        req = t.requests
        weight = f"{t.weight} (shadow)" if t.shadow else str(t.weight)
        share = "copies" if t.shadow else percent(t.share)
        rows.append([t.name, weight, share, t.status, str(req.get("total", 0)), fmt_ms(req.get("p50_ms")),
                     fmt_codes(req)])
    lines = [
        f"traffic splitter: {splitter.name} ({splitter.status})",
        f"endpoint:         {splitter.url}",
        f"source:           {splitter.source}",
        "",
        _table(["APIS", "WEIGHT", "SHARE", "STATUS", "REQUESTED", "P50", "2XX/4XX/5XX"], rows),
    ]
    dropped = [t for t in splitter.targets if t.shadow and t.dropped]
    lines.extend(f"shadow {t.name}: {t.dropped} copies dropped (down or at its concurrency limit)" for t in dropped)
    if splitter.refused:
        lines.append(f"refused: {splitter.refused} request(s) answered 503 (no api could take them)")
    if splitter.notes:
        lines.append("")
        lines.extend(splitter.notes)
    lines.append("")
    lines.append(f"example curl: curl {splitter.url} -X POST -H \"Content-Type: application/json\" -d @sample.json")
    return "\n".join(lines)


def api_detail(api: APIStatus, models: dict | None = None) -> str:
    """`cortexd get API`; models: {replica id: what it serves} (control API /apis/{name})."""
    r = api.replicas
    lines = [
        f"api:        {api.name} ({api.predictor_type}, {api.kind})",
        f"status:     {api.status}",
        f"url:        {api.url}",
        (f"replicas:   {r.ready} ready / {r.requested} requested "
         f"(min {r.min}, max {r.max}, restarts {r.restarts})"),
        f"in-flight:  {api.in_flight}",
        f"requests:   2xx/4xx/5xx {_requests(api)}{_codes(api)}",
        f"latency:    {_latency_line(api)}",
        f"source:     {api.source}",
    ]
    if api.last_decision:
        lines.append(f"autoscaler: {api.last_decision}")
    lines.extend(isolation_lines(api.isolation))
    if api.gpu_note:  # "compute.gpu: 1 requested; running on CPU (--cpu-only): ..."
        lines.append(api.gpu_note)
    lines.extend(f"{'pins:' if i == 0 else '':<12}{change}" for i, change in enumerate(api.pins))
    if r.pending_reason:
        lines.append(f"pending:    {r.pending_reason}")
    if api.reason:
        lines.append("reason:")
        lines.extend(f"  {line}" for line in api.reason.splitlines())
    if api.replica_list:
        lines.append("")
        # a crashed replica is replaced under a new id, so restarts are counted per API
        # (the replicas line above)
        rows = [
            [rep.id, rep.state + ("" if rep.current else " (old)"), rep.address, fmt_age(rep.age_s),
             str(rep.in_flight), ",".join(map(str, rep.gpu_ids)) or "-"]
            for rep in api.replica_list
        ]
        lines.append(_table(["REPLICA", "STATE", "ADDRESS", "AGE", "IN-FLIGHT", "GPUS"], rows))
    mon = api.requests.get("monitoring")
    if mon:
        lines.append("")
        lines.append(monitoring_table(mon))
    models_text = models_table(models or {})
    if models_text:
        lines.append("")
        lines.append(models_text)
    return "\n".join(lines)


def models_table(per_replica: dict) -> str:
    """Models each replica serves: versions available, versions loaded in memory, cache limits."""
    rows = []
    notes = []
    for rid, info in sorted(per_replica.items()):
        if "error" in info:
            notes.append(f"{rid}: {info['error']}")
            continue
        models = info.get("models") or ({"(model)": info["model"]} if "model" in info else {})
        cache = info.get("model_cache") or {}
        for name, m in sorted(models.items()):
            rows.append([rid, name, ",".join(map(str, m.get("versions") or [])) or "-",
                         ",".join(map(str, m.get("loaded_versions") or [])) or "-"])
        if cache.get("cache_size") is not None or cache.get("disk_cache_size") is not None:
            notes.append(f"{rid}: {len(cache.get('in_memory') or [])} of cache_size "
                         f"{cache.get('cache_size', '-')} in memory"
                         + (f", {len(cache.get('on_disk') or [])} of disk_cache_size "
                            f"{cache['disk_cache_size']} on disk" if cache.get("disk_cache_size") else ""))
    if not rows and not notes:
        return ""
    out = [_table(["REPLICA", "MODEL", "VERSIONS", "IN MEMORY"], rows)] if rows else []
    return "\n".join(out + notes)


def _codes(api: APIStatus) -> str:
    codes = api.requests.get("codes") or {}
    if not codes:
        return ""
    return " (" + ", ".join(f"{c}: {n}" for c, n in codes.items()) + ")"


def _latency_line(api: APIStatus) -> str:
    c = api.requests
    if c.get("p50_ms") is None:
        return f"no requests in the last {c.get('latency_window_s', 60)}s"
    return (f"p50 {fmt_ms(c['p50_ms'])}, p99 {fmt_ms(c['p99_ms'])} (last {c.get('latency_window_s', 60)}s); "
            f"{c.get('requests_per_s', 0):.1f} req/s")


def batch_detail(api: dict[str, Any]) -> str:
    """`cortexd get BATCHAPI`: its endpoint and its jobs, newest first (the control API's answer)."""
    out = [f"batch api:  {api['name']}", f"endpoint:   http://127.0.0.1:{api['port']}{api['endpoint']}  "
           "(POST a job; GET ?jobID= its status; DELETE ?jobID= stops it)", ""]
    out[2:2] = isolation_lines(api.get("isolation"))  # who its job workers run as (after the first)
    jobs = api.get("jobs") or []
    if not jobs:
        return "\n".join([*out, "no jobs submitted"])
    rows = [[j["job_id"], j["status"], _progress(j["succeeded"] + j["failed"], j["total"]), str(j["failed"]),
             str(j["workers"]), (j.get("created_time") or "")[:19]] for j in jobs]
    return "\n".join([*out, _table(["JOB ID", "STATUS", "PROGRESS", "FAILED", "WORKERS", "CREATED"], rows)])


def _progress(done: int, total: int) -> str:
    """'45/100 (45%)': batches done (succeeded or failed) of the job's."""
    return f"{done}/{total} ({100 * done // max(total, 1)}%)"


def _elapsed(status: dict[str, Any], now: float) -> float | None:
    """Seconds from a job's creation to its end (or `now`), from the ISO times of its status."""
    try:
        start = datetime.fromisoformat(status["created_time"]).timestamp()
        end = datetime.fromisoformat(status["end_time"]).timestamp() if status.get("end_time") else now
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, end - start)


def job_detail(answer: dict[str, Any], now: float) -> str:
    """`cortexd get BATCHAPI JOB_ID`: a job's status, progress, batches and workers."""
    s = answer["job_status"]
    m, w = s["batch_metrics"], s["worker_counts"]
    avg = m.get("avg_time_per_batch")
    done, elapsed = m["succeeded"] + m["failed"], _elapsed(s, now)
    pace = "" if elapsed is None else f", {fmt_age(elapsed)} elapsed" + (
        f", {done / elapsed:.1f} batches/s" if done and elapsed > 0 else "")
    lines = [f"job:        {s['job_id']} (batch api {s['api_name']})", f"status:     {s['status']}",
             f"progress:   {_progress(done, m['total'])} batches done{pace}",
             f"batches:    {m['succeeded']} succeeded, {m['failed']} failed, {m['running']} running, "
             f"{s['batches_in_queue']} queued, of {m['total']}",
             f"avg time:   {'-' if avg is None else f'{avg:.3f} s'} per batch",
             f"workers:    {s['workers']} ({w['running']} running, {w['succeeded']} succeeded, {w['failed']} failed)",
             f"created:    {s['created_time']}", f"ended:      {s.get('end_time') or '-'}",
             f"config:     {s['config']}"]
    lines += [f"failed batch {f['batch']}: {f['error']}" for f in s.get("failed_batches", [])]
    return "\n".join(lines)

