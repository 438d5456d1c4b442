"""Plain-text renderers of the status snapshot (control API /status) for `cortexd get`.

Pure functions: snapshot dict in, text out. They work on any stdout (pipes,
logs); the live rich view renders the same snapshot.
"""

from __future__ import annotations


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _replicas(api: dict) -> str:
    r = api["replicas"]
    text = f"{r['ready']}/{r['requested']}"
    if r.get("starting"):
        text += f" (+{r['starting']} starting)"
    return text


def _requests(api: dict) -> str:
    c = api.get("requests") or {}
    if not c:
        return "-"
    return f"{c.get('2xx', 0)}/{c.get('4xx', 0)}/{c.get('5xx', 0)}"


def api_table(snap: dict) -> str:
    apis = snap.get("apis", [])
    if not apis:
        return "no apis deployed"
    rows = [
        [a["name"], a["status"], _replicas(a), str(a.get("in_flight", 0)), _requests(a), a["url"]]
        for a in apis
    ]
    out = [_table(["API", "STATUS", "READY/REQUESTED", "IN-FLIGHT", "2XX/4XX/5XX", "URL"], rows)]
    for a in apis:
        if a.get("reason"):
            first, *rest = a["reason"].splitlines()
            out.append(f"\n{a['name']}: {first}")
            out.extend(f"  {line}" for line in rest)
        elif a["replicas"].get("pending_reason"):
            out.append(f"\n{a['name']}: {a['replicas']['pending_reason']}")
    error = snap.get("daemon", {}).get("config_error")
    if error:
        out.append(f"\nconfiguration error (the previous configuration keeps serving):\n{error}")
    return "\n".join(out)


def api_detail(api: dict) -> str:
    r = api["replicas"]
    lines = [
        f"api:        {api['name']} ({api['predictor_type']}, {api['kind']})",
        f"status:     {api['status']}",
        f"url:        {api['url']}",
        f"replicas:   {r['ready']} ready / {r['requested']} requested "
        f"(min {r['min']}, max {r['max']}, restarts {r['restarts']})",
        f"in-flight:  {api.get('in_flight', 0)}",
        f"requests:   2xx/4xx/5xx {_requests(api)}",
        f"source:     {api['source']}",
    ]
    if api.get("last_decision"):
        lines.append(f"autoscaler: {api['last_decision']}")
    if r.get("pending_reason"):
        lines.append(f"pending:    {r['pending_reason']}")
    if api.get("reason"):
        lines.append("reason:")
        lines.extend(f"  {line}" for line in api["reason"].splitlines())
    if api.get("replica_list"):
        lines.append("")
        rows = [
            [rep["id"], rep["state"] + ("" if rep["current"] else " (old)"), rep["address"],
             f"{rep['age_s']:.0f}s", str(rep["in_flight"])]
            for rep in api["replica_list"]
        ]
        lines.append(_table(["REPLICA", "STATE", "ADDRESS", "AGE", "IN-FLIGHT"], rows))
    return "\n".join(lines)
