"""bench/peer_report.py: what bench/peers.py reads from wrk and /proc, and the table it prints.

bench/ is not a package: the module is loaded from its file (it imports only the standard library).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "peer_report.py"
_SPEC = importlib.util.spec_from_file_location("peer_report", _PATH)
assert _SPEC and _SPEC.loader
report = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault("peer_report", report)  # dataclasses look their module up by name
_SPEC.loader.exec_module(report)

WRK = """Running 3s test @ http://127.0.0.1:40000/bench
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms  812.00us  21.20ms   90.12%
    Req/Sec    13.95k     1.02k   15.33k    73.33%
  Latency Distribution
     50%    2.18ms
     75%    2.47ms
     90%    2.90ms
     99%    1.02s
  41702 requests in 3.00s, 6.04MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  13893.21
Transfer/sec:      2.01MB
"""


def test_wrk_report_gives_rate_count_percentiles_in_ms_and_every_error():
    assert report.parse_wrk(WRK) == {"rps": 13893.21, "count": 41702, "p50": 2.18, "p99": 1020.0, "errors": 7}


def test_wrk_report_without_errors_counts_none():
    clean = "\n".join(line for line in WRK.splitlines() if "errors" not in line and "Non-2xx" not in line)
    assert report.parse_wrk(clean)["errors"] == 0


def test_wrk_output_without_a_report_is_refused_with_the_output():
    with pytest.raises(ValueError, match="wrk printed no report:\nunable to connect"):
        report.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


@pytest.mark.parametrize(("text", "ms"), [("812.00us", 0.812), ("1.5ms", 1.5), ("2.00s", 2000.0), ("1.00m", 60000.0)])
def test_wrk_durations_in_ms(text, ms):
    assert report.duration_ms(text) == pytest.approx(ms)


def test_stat_line_with_spaces_and_parens_in_the_name():
    stat = "4242 (ray::Serve (x) 1) S 4200 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 9 0 12345 0 0"
    assert report.stat_fields(stat) == (4200, 175)


def test_tree_holds_the_root_and_every_descendant_only():
    parents = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20}
    assert report.tree_of(10, parents) == {10, 11, 12, 13}
    assert report.tree_of(99, parents) == {99}


def test_machine_line_names_cores_cpu_memory_and_load():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\nprocessor\t: 1\n"
    assert (report.machine(cpuinfo, "1.52 0.90 0.40 2/300 999\n", 2, 24 * 2**20)
            == "2 cores (AMD EPYC 9654 96-Core Processor), 24 GiB, load average 1.52")
    assert "unknown CPU" in report.machine("", "0.00 0 0", 1, 2**20)


def test_table_gives_ratios_to_cortexd_of_the_same_workload_and_names_failures():
    results = [
        report.Result("cortexd", "noop", rps=10000, p50_ms=2.0, p99_ms=5.0, cpu_us=100),
        report.Result("bentoml", "noop", rps=2500, p50_ms=12.5, p99_ms=40.0, cpu_us=400, errors=3),
        report.Result("cortexd", "image", failed="did not answer"),
        report.Result("ray", "image", rps=100, p50_ms=300, p99_ms=900, cpu_us=9000),
    ]
    lines = report.table(results, {"cortexd": "0.1.0 (abc1234)", "bentoml": "1.4.40"}).splitlines()
    assert lines[0].startswith("| workload | server | req/s | x cortexd |")
    assert lines[2] == "| noop | cortexd 0.1.0 (abc1234) | 10,000 | 1.00x | 2.00 | 5.00 | 100 | 1.00x | 0 |"
    assert lines[3] == "| noop | bentoml 1.4.40 | 2,500 | 0.25x | 12.50 | 40.00 | 400 | 4.00x | 3 |"
    assert lines[4] == "| image | cortexd 0.1.0 (abc1234) | failed: did not answer | | | | | | |"
    assert lines[5] == "| image | ray | 100 | - | 300.00 | 900.00 | 9,000 | - | 0 |"  # no baseline: no ratio
