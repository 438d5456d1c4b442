"""What bench/peers.py reads and prints, as pure functions (tests/unit/test_bench_peers.py).

wrk's report -> numbers; /proc text -> a process tree's CPU time and the machine's
description; the results of one run -> a markdown table with each server's figures as
ratios to cortexd's in that run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass(frozen=True)
class Result:
    server: str
    workload: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us: float = 0.0  # the server's process tree's CPU time per answered request
    errors: int = 0  # non-2xx answers and socket errors wrk counted
    failed: str = ""  # why there are no figures (the server did not start, ...)


def duration_ms(text: str) -> float:
    """One of wrk's durations ("812.00us", "1.20ms", "2.00s", "1.00m") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """wrk --latency's report -> rps, count, p50/p99 (ms), errors (non-2xx plus socket errors)."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    lat = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", out, re.MULTILINE))
    if rps is None or count is None or "50" not in lat or "99" not in lat:
        raise ValueError("wrk printed no report:\n" + out[-2000:])
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"rps": float(rps.group(1)), "count": int(count.group(1)), "p50": duration_ms(lat["50"]),
            "p99": duration_ms(lat["99"]), "errors": errors}


def stat_fields(stat: str) -> tuple[int, int]:
    """(ppid, utime+stime in clock ticks) from one /proc/PID/stat line (the name may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_of(root: int, parents: dict[int, int]) -> set[int]:
    """root and every process below it, from a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def machine(cpuinfo: str, loadavg: str, cores: int, mem_kb: int) -> str:
    """The machine in one line: cores, CPU model, memory and the load average (1 min) now."""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return (f"{cores} cores ({model.group(1).strip() if model else 'unknown CPU'}), "
            f"{mem_kb / 2**20:.0f} GiB, load average {loadavg.split()[0]}")


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def table(results: list[Result], versions: dict[str, str], baseline: str = "cortexd") -> str:
    """A markdown table, one row per server and workload, ratios to the baseline's row of that workload."""
    head = ("| workload | server | req/s | x cortexd | p50 ms | p99 ms | CPU us/req | x cortexd | errors |\n"
            "|---|---|---|---|---|---|---|---|---|")
    base = {r.workload: r for r in results if r.server == baseline and not r.failed}
    rows = [head]
    for r in results:
        name = f"{r.server} {versions.get(r.server, '')}".strip()
        if r.failed:
            rows.append(f"| {r.workload} | {name} | failed: {r.failed} | | | | | | |")
            continue
        b = base.get(r.workload)
        rows.append(f"| {r.workload} | {name} | {r.rps:,.0f} | {_ratio(r.rps, b.rps) if b else '-'} | "
                    f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us:,.0f} | "
                    f"{_ratio(r.cpu_us, b.cpu_us) if b else '-'} | {r.errors} |")
    return "\n".join(rows)
