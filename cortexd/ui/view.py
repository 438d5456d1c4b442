"""Rich renderers of the status snapshot (control API GET /status) for the live view.

Pure functions: a cortexd.status.Status (and `now`, wall-clock seconds) in, a rich
renderable out; no I/O, no clock reads. `cortexd status` and foreground
`cortexd up` refresh them through ui/live.py; tests render them to a
fixed-width `Console(file=StringIO(), width=80)` and assert the text.

Layout (fits 80 columns; wider terminals give the API column more room):

    cortexd 0.4.0 · backend process · pid 41 · up 3m12s · metrics 127.0.0.1:8889
     API        STATUS    READY  IN-FL  REQ/S     P50     P99  2XX/4XX/5XX
     iris       live        1/1      0   12.3   1.2ms   4.5ms     120/0/1
    iris · http://127.0.0.1:8888/iris
      autoscaler  keeping 1 replica(s): ...
      monitoring  classification: setosa 50 · versicolor 30
      trend       ▁▂▃▅▇█ req/s, last 2 min (max 14.0)   (the daemon's history: cortexd/history.py)
    GPUs  no GPU: ...
    events (newest first)
      3s  iris  replica r-1 ready

BatchAPIs come after the traffic splitters: a row each, then per BatchAPI its jobs shown (those
not ended with a bar; an ended one, for a while, with its end status where its bar was):

     BATCH API  JOBS RUNNING/SUBMITTED  URL
     sum                           1/3  http://127.0.0.1:8888/sum
    sum jobs
      JOB               PROGRESS             DONE  FAILED  WORKERS  ELAPSED  BATCH/S
      3f2a9c0d1e2f3a4b  ━━━━━━╸       45%  45/100       0        2      12s      3.7
      9d01b7c2e4f6a8b0  succeeded         100/100       0        0    1m05s      1.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cortexd.core.batch_jobs import JobStatus
from cortexd.core.splitting import percent
from cortexd.spec.units import format_bytes
from cortexd.status import APIStatus, BatchAPIStatus, EventStatus, GPUStatus, JobProgress, SplitterStatus, Status

STATUS_STYLE = {"live": "green", "updating": "yellow", "error": "bold red", "degraded": "yellow", "down": "bold red"}
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "red"}
EVENTS_SHOWN = 8
CLASSES_INLINE = 5  # classes listed in the live view's one-line monitoring summary


# -- small formatters (also used by the plain-text renderers) ---------------------------


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def fmt_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def fmt_bytes(n: int | None) -> str:
    """GPU memory: 40.0GiB, 512MiB."""
    if n is None:
        return "-"
    return format_bytes(n, 1 if n >= 2**30 else 0, sep="", smallest="MiB")


def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def fmt_replicas(api: APIStatus) -> str:
    r = api.replicas
    text = f"{r.ready}/{r.requested}"
    if r.starting:
        text += f"+{r.starting}"
    return text


def fmt_codes(req: Mapping[str, Any]) -> str:
    if not req:
        return "-"
    return f"{req.get('2xx', 0)}/{req.get('4xx', 0)}/{req.get('5xx', 0)}"


def monitoring_line(mon: dict | None, classes: int = CLASSES_INLINE) -> str | None:
    """One-line summary: class counts (most frequent first) or the regression value's spread."""
    if not mon:
        return None
    unreadable = f" · {mon['unreadable']} unreadable" if mon.get("unreadable") else ""
    key = f" [{mon['key']}]" if mon.get("key") else ""
    if not mon.get("predictions"):
        return f"{mon['model_type']}{key}: no predictions yet{unreadable}"
    if mon["model_type"] == "classification":
        shown = mon["classes"][:classes]
        parts = [f"{c['class']} {c['count']}" for c in shown]
        more = len(mon["classes"]) - len(shown) + mon.get("more_classes", 0)
        if more:
            parts.append(f"and {more} more")
        return f"classification{key}: " + " · ".join(parts) + unreadable
    return (f"regression{key}: min {fmt_number(mon['min'])} · max {fmt_number(mon['max'])} · "
            f"avg {fmt_number(mon['avg'])} · p50 {fmt_number(mon['p50'])} · "
            f"p99 {fmt_number(mon['p99'])}{unreadable}")


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One character a value, its height relative to the largest (all zero: the lowest)."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1) + 0.5))] for v in values)


def split_weights(splitter: SplitterStatus) -> str:
    """'a:70 b:30 s:100(shadow)', as Cortex's `get` listed a splitter's apis; a down api is marked."""
    return " ".join(f"{t.name}:{t.weight}" + ("(shadow)" if t.shadow else "") + ("(down)" if t.down else "")
                    for t in splitter.targets)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


# -- the live view -------------------------------------------------------------------


def header(snap: Status, now: float) -> Text:
    d = snap.daemon
    parts = [f"cortexd {d.version}", f"backend {d.backend or '?'}", f"pid {d.pid}",
             f"up {fmt_age(d.uptime_s)}"]
    if d.metrics_url:
        parts.append("metrics " + d.metrics_url.removeprefix("http://").removesuffix("/metrics"))
    text = Text(" · ".join(parts), style="bold")
    return text


def apis_table(snap: Status) -> RenderableType:
    apis = snap.apis
    if not apis:
        return Text("no apis deployed", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
                  header_style="bold", expand=False)
    table.add_column("API", no_wrap=True, overflow="ellipsis", min_width=8, max_width=32)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("READY", justify="right", no_wrap=True)
    table.add_column("IN-FL", justify="right", no_wrap=True)
    table.add_column("REQ/S", justify="right", no_wrap=True)
    table.add_column("P50", justify="right", no_wrap=True)
    table.add_column("P99", justify="right", no_wrap=True)
    table.add_column("2XX/4XX/5XX", justify="right", no_wrap=True)
    for api in apis:
        req = api.requests
        rate = req.get("requests_per_s")
        table.add_row(
            Text(api.name),
            # "updating (installing requirements)" is styled as "updating"
            Text(api.status, style=STATUS_STYLE.get(api.status.split(" (", 1)[0], "")),
            fmt_replicas(api),
            str(api.in_flight),
            "-" if rate is None else f"{rate:.1f}",
            fmt_ms(req.get("p50_ms")),
            fmt_ms(req.get("p99_ms")),
            fmt_codes(req),
        )
    return table


def splitters_view(splitters: Sequence[SplitterStatus]) -> RenderableType:
    """The traffic splitters: status, apis with their weights and shares now, requests per api."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
                  header_style="bold", expand=False)
    table.add_column("SPLITTER", no_wrap=True, overflow="ellipsis", min_width=8, max_width=24)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("API", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("WEIGHT", justify="right", no_wrap=True)
    table.add_column("SHARE", justify="right", no_wrap=True)
    table.add_column("REQ/S", justify="right", no_wrap=True)
    table.add_column("2XX/4XX/5XX", justify="right", no_wrap=True)
    for split in splitters:
        for i, t in enumerate(split.targets):
            rate = t.requests.get("requests_per_s")
            table.add_row(Text(split.name if i == 0 else ""),
                          Text(split.status, style=STATUS_STYLE.get(split.status, "")) if i == 0 else "",
                          Text(t.name, style="dim" if t.down else ""),
                          f"{t.weight}{'s' if t.shadow else ''}", "copy" if t.shadow else percent(t.share),
                          "-" if rate is None else f"{rate:.1f}", fmt_codes(t.requests))
    notes = [Text(f"  {s.name}: {note}", style="yellow") for s in splitters for note in s.notes]
    return Group(table, *notes)


# -- BatchAPIs: a row each and, under it, a row per job shown (core.batch_jobs.shown_jobs) ------

# an ended job's status, where its bar was (Cortex's value, without its `status_` prefix)
END_STYLE = {JobStatus.SUCCEEDED.value: "green", JobStatus.COMPLETED_WITH_FAILURES.value: "yellow",
             JobStatus.STOPPED.value: "dim"}


def end_words(status: str) -> str:
    """'status_completed_with_failures' -> 'completed with failures'."""
    return status.removeprefix("status_").replace("_", " ")


def batch_rate(job: JobProgress, now: float) -> str:
    """Batches done (succeeded or failed) per second since the job was created."""
    elapsed = job.elapsed(now)
    if not job.done or elapsed <= 0:
        return "-"
    rate = job.done / elapsed
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def progress_cell(job: JobProgress) -> RenderableType:
    """A running job's bar (yellow once a batch failed) and its percent of batches done."""
    grid = Table.grid(expand=True, padding=(0, 1, 0, 0))
    grid.add_column(ratio=1)
    grid.add_column(justify="right", no_wrap=True, width=4)
    bar = ProgressBar(total=max(job.total, 1), completed=job.done, complete_style="yellow" if job.failed else "green",
                      finished_style="green")
    grid.add_row(bar, f"{100 * job.done // max(job.total, 1)}%")
    return grid


def _simple_table() -> Table:
    return Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
                 header_style="bold", expand=False)


def batch_apis_table(batch_apis: Sequence[BatchAPIStatus]) -> Table:
    table = _simple_table()
    table.add_column("BATCH API", no_wrap=True, overflow="ellipsis", min_width=8, max_width=32)
    table.add_column("JOBS RUNNING/SUBMITTED", justify="right", no_wrap=True)
    table.add_column("URL", overflow="fold")
    for b in batch_apis:
        table.add_row(Text(b.name), f"{b.running}/{b.jobs}", Text(b.url, style="cyan"))
    return table


def jobs_table(jobs: Sequence[JobProgress], now: float) -> Table:
    """A row per job: its bar (or its end status), batches done of total, failed, workers, elapsed, rate."""
    table = _simple_table()
    table.add_column("JOB", no_wrap=True)
    table.add_column("PROGRESS", min_width=10, ratio=1)
    for name in ("DONE", "FAILED", "WORKERS", "ELAPSED", "BATCH/S"):
        table.add_column(name, justify="right", no_wrap=True)
    for job in jobs:
        bar = progress_cell(job) if job.ended is None else Text(end_words(job.status),
                                                                 style=END_STYLE.get(job.status, "red"))
        table.add_row(job.job_id, bar, f"{job.done}/{job.total}",
                      Text(str(job.failed), style="red" if job.failed else ""),
                      str(job.workers_running), fmt_age(job.elapsed(now)), batch_rate(job, now))
    return table


def batch_view(batch_apis: Sequence[BatchAPIStatus], now: float) -> RenderableType:
    """The BatchAPIs' table, then each one's jobs shown, with a line for running jobs not shown."""
    parts: list[RenderableType] = [batch_apis_table(batch_apis)]
    for b in batch_apis:
        if not b.job_list:
            continue
        parts.append(Text.assemble((b.name, "bold"), " jobs"))
        parts.append(Padding(jobs_table(b.job_list, now), (0, 0, 0, 2)))
        hidden = b.running - sum(1 for j in b.job_list if j.ended is None)
        if hidden > 0:
            parts.append(Text(f"  and {hidden} more job(s) running (cortexd get {b.name})", style="dim"))
    return Group(*parts)


def api_notes(api: APIStatus) -> RenderableType:
    """Under the table, per API: its URL, why replicas are pending or it is in error, who its
    replicas run as when not isolated, a GPU API served on the CPU, the nearest pins its
    environment installed, the autoscaler's last decision and the monitoring summary."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True, min_width=12)
    grid.add_column(overflow="fold")
    if api.reason:
        lines = api.reason.strip().splitlines()
        shown = "\n".join(lines[-6:]) if len(lines) > 1 else lines[0]
        grid.add_row("  error", Text(shown, style="red"))
    if api.replicas.pending_reason:
        grid.add_row("  pending", Text(api.replicas.pending_reason, style="yellow"))
    notice = (api.isolation or {}).get("notice")
    if notice:
        grid.add_row("  isolation", Text(notice, style="yellow"))
    if api.gpu_note:
        grid.add_row("  compute", Text(api.gpu_note, style="yellow"))
    for i, change in enumerate(api.pins):  # nearest pins installed instead of requirements.txt's
        grid.add_row("  pins" if i == 0 else "", Text(change, style="yellow"))
    isolation = api.isolation or {}
    if isolation.get("project_mount_available") is False:
        grid.add_row("  /mnt/project", Text(isolation.get("project_mount", ""), style="yellow"))
    if api.last_decision:
        grid.add_row("  autoscaler", Text(api.last_decision))
    mon = monitoring_line(api.requests.get("monitoring"))
    if mon:
        grid.add_row("  monitoring", Text(mon))
    if any(api.trend):  # an API with traffic in the last 2 minutes
        grid.add_row("  trend", Text.assemble((sparkline(api.trend), "cyan"),
                                              f" req/s, last 2 min (max {max(api.trend):.1f})"))
    title = Text.assemble((api.name, "bold"), " · ", (api.url, "cyan"))
    return Group(title, grid)


def gpus_view(gpus: GPUStatus | None) -> RenderableType:
    if gpus is None:
        return Text("GPUs  not read", style="dim")
    devices = gpus.devices
    if not devices:
        reason = gpus.reason
        # the reason often carries parentheses of its own (NVML's error): no second pair around it
        return Text.assemble(("GPUs  ", "bold"), "no GPU", (f": {reason}" if reason else "", "dim"))
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), show_header=True,
                  header_style="bold", title=None)
    table.add_column("GPU", no_wrap=True)
    table.add_column("NAME", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("UTIL", justify="right", no_wrap=True)
    table.add_column("MEMORY", justify="right", no_wrap=True)
    for d in devices:
        util = "-" if d.utilization is None else f"{d.utilization}%"
        used, total = d.memory_used, d.memory_total
        pct = f" {100 * used / total:.0f}%" if used is not None and total else ""
        table.add_row(str(d.index), Text(d.name), util,
                      f"{fmt_bytes(used)}/{fmt_bytes(total)}{pct}")
    return table


def events_view(events: Sequence[EventStatus], now: float, n: int = EVENTS_SHOWN) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(justify="right", style="dim", no_wrap=True)
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for e in reversed(events[-n:]):  # newest first: a short terminal cuts the oldest
        grid.add_row(fmt_age(now - e.at), Text(e.api or ""),
                     Text(first_line(e.message), style=LEVEL_STYLE.get(e.level, "")))
    return Group(Text("events", style="bold"), grid) if events else Text("events  none yet", style="dim")


def status_view(snap: Status, now: float) -> RenderableType:
    """The whole live view of one snapshot."""
    parts: list[Any] = [header(snap, now)]
    if snap.apis or not (snap.splitters or snap.batch_apis):  # as `get`: no line for no RealtimeAPI beside others
        parts.append(apis_table(snap))
    parts.extend(api_notes(api) for api in snap.apis)
    if snap.splitters:
        parts.append(splitters_view(snap.splitters))
    if snap.batch_apis:
        parts.append(batch_view(snap.batch_apis, now))
    error = snap.daemon.config_error
    if error:
        parts.append(Text("configuration rejected (the previous one keeps serving): "
                          + first_line(error), style="red"))
    parts.append(Text(""))
    parts.append(gpus_view(snap.gpus))
    parts.append(events_view(snap.events, now))
    return Group(*parts)
