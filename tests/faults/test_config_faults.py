"""Mutated cortex.yaml files: `cortexd validate` and a live daemon answer each with a located error.

A bounded, seeded fuzz over the examples' configurations (and one that sets every field):
values replaced by hostile ones (non-finite numbers, integers of thousands of digits, huge
quantities and durations, deep nesting, control characters), lines deleted, duplicated,
re-indented, files cut short. Every outcome is either a valid configuration or a
ConfigError whose every problem names file:line; never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
import time
from pathlib import Path

import pytest

from cortexd import cli as cortexd_cli
from tests.builders import OK_PREDICTOR, write_project
from tests.real_daemon import free_port, http, post_json

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SEED = 20261201
MUTANTS = 300

EVERY_FIELD = """\
- name: every-field
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
    threads_per_process: 4
    config:
      threshold: 0.5
    env:
      LEVEL: info
  networking:
    endpoint: /every
    local_port: 8890
  compute:
    cpu: 500m
    gpu: 0
    mem: 512Mi
  autoscaling:
    min_replicas: 1
    max_replicas: 8
    init_replicas: 2
    target_replica_concurrency: 4
    max_replica_concurrency: 64
    window: 60s
    downscale_stabilization_period: 5m
    upscale_stabilization_period: 1m
    max_downscale_factor: 0.75
    max_upscale_factor: 1.5
    downscale_tolerance: 0.05
    upscale_tolerance: 0.05
  update_strategy:
    max_surge: 25%
    max_unavailable: 1
"""

HOSTILE_VALUES = [
    ".inf", "-.inf", ".nan", ".NaN", "1e400", "-1e400",
    "9" * 4301, "1" + "0" * 400, "-" + "9" * 5000, "0x" + "f" * 5000,
    '"1' + "0" * 400 + 'Ei"', '"9' + "9" * 400 + '0s"', '"' + "9" * 5000 + '%"', '"' + "9" * 5000 + 'm"',
    "2147483648", "99999999999999999999", "-1", "0", "1.5", '"abc"', "null", "[]", "{}", "true",
    "2020-13-45", "12:30:61", "!!binary aGVsbG8=", "!!float abc", "&a [*a]", "*nope",
    "[" * 600 + "]" * 600, "{a: " * 300 + "1" + "}" * 300,
]
CONTROL_CHARACTERS = ["\x00", "\x07", "\x1b", "\x7f", "\ufeff", "\x85", "\ud800"]
LOCATED = re.compile(r"^  \S[^:]*:\d+(:\d+)?: ")


def base_projects() -> list[tuple[Path, str]]:
    out = [(EXAMPLES / name, (EXAMPLES / name / "cortex.yaml").read_text())
           for name in sorted(p.name for p in EXAMPLES.iterdir() if (p / "cortex.yaml").is_file())]
    out.append((EXAMPLES / "iris-classifier", EVERY_FIELD))
    return out


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines() or [""]
    kind = rng.randrange(8)
    i = rng.randrange(len(lines))
    valued = [n for n, ln in enumerate(lines) if re.match(r"^\s*(- )?[a-z_]+: \S", ln)]
    if kind <= 2 and valued:  # a value replaced by a hostile one
        n = rng.choice(valued)
        key = lines[n].split(":", 1)[0]
        lines[n] = f"{key}: {rng.choice(HOSTILE_VALUES)}"
    elif kind <= 3:  # a control character somewhere
        pos = rng.randrange(len(text) + 1)
        return text[:pos] + rng.choice(CONTROL_CHARACTERS) + text[pos:]
    elif kind == 4:
        del lines[i]
    elif kind == 5:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif kind == 6:
        lines[i] = " " * rng.randrange(0, 9) + lines[i].lstrip()
    else:  # cut short, or a stray character
        pos = rng.randrange(len(text) + 1)
        return text[:pos] if rng.random() < 0.5 else text[:pos] + rng.choice(":-[]{}&*!|>'\"%@`#,?") + text[pos:]
    return "\n".join(lines) + "\n"


def validate(folder: Path) -> tuple[int, str]:
    """`cortexd validate FOLDER` in this process (a traceback would fail the test where it happens)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cortexd_cli.main(["validate", str(folder)])
    return code, err.getvalue()


def test_mutated_configs_never_crash_validate_and_every_error_is_located(tmp_path):
    rng = random.Random(SEED)
    bases = base_projects()
    unlocated, refused, slowest = [], 0, (0.0, -1)
    for n in range(MUTANTS):
        source, text = bases[n % len(bases)]
        folder = tmp_path / f"m{n}"
        shutil.copytree(source, folder)
        mutant = mutate(text, rng)
        (folder / "cortex.yaml").write_text(mutant, encoding="utf-8", errors="surrogatepass")
        started = time.monotonic()
        code, err = validate(folder)
        slowest = max(slowest, (time.monotonic() - started, n))
        assert code in (0, 1), (n, code, err)
        if code == 1:
            refused += 1
            problems = err.splitlines()[1:]
            assert err.startswith("error: ") and problems, (n, err)
            unlocated += [(n, p) for p in problems if not LOCATED.match(p)]
        shutil.rmtree(folder)
    assert not unlocated, unlocated[:10]
    assert refused >= MUTANTS // 2  # the mutations do reach the checks
    # no mutant makes validate blow up (a 10^400 quantity or 500 levels of nesting worked
    # through the slow way): each file takes milliseconds, so 10 s is far off even under load
    assert slowest[0] < 10, f"validating mutant {slowest[1]} took {slowest[0]:.1f} s"


@pytest.mark.parametrize("value", [".inf", ".nan", "1" + "0" * 400, '"1' + "0" * 400 + 'Ei"'])
def test_the_cli_prints_a_located_error_without_a_traceback(cli, tmp_path, value):
    project = write_project(tmp_path / "p", EVERY_FIELD.replace("max_upscale_factor: 1.5",
                                                                f"max_upscale_factor: {value}")
                            .replace("mem: 512Mi", f"mem: {value}"),
                            {"predictor.py": "class PythonPredictor:\n    def __init__(self, config): pass\n"
                                             "    def predict(self, payload): return 1\n"})
    result = cli("validate", str(project))
    assert result.code == 1
    assert "Traceback" not in result.err
    assert re.search(r"cortex\.yaml:\d+:\d+: api 'every-field': autoscaling\.max_upscale_factor: ", result.err)
    assert re.search(r"cortex\.yaml:\d+:\d+: api 'every-field': compute\.mem: ", result.err)




def test_a_hostile_save_over_a_live_config_is_rejected_and_the_api_keeps_serving(cli, tmp_path):
    port = free_port()
    yaml_text = (f"- name: live\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
                 f"  networking:\n    local_port: {port}\n")
    project = write_project(tmp_path / "live", yaml_text, {"predictor.py": OK_PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    url = f"http://127.0.0.1:{port}/live"
    # many values that take long to check, then nesting too deep: each save is rejected
    heavy = yaml_text + "    config:\n" + "".join(f"      k{i}: [{', '.join(['1'] * 50)}]\n" for i in range(2000))
    for hostile in (heavy + "      bad: .nan\n", yaml_text.replace("predictor.py\n", "predictor.py\n    config: "
                                                                   + "[" * 600 + "]" * 600 + "\n")):
        (project / "cortex.yaml").write_text(hostile)
        snap = cli.wait_for(lambda s: s["daemon"]["config_error"], timeout=30, what="the save rejected")
        assert re.search(r"cortex\.yaml:\d+:\d+: ", snap["daemon"]["config_error"])
        status, _, body = post_json(url, {})
        assert status == 200, body
        (project / "cortex.yaml").write_text(yaml_text)
        cli.wait_for(lambda s: not s["daemon"]["config_error"], timeout=30, what="the good file back")
    status, _, _ = http("GET", url)
    assert status == 200


def children(pid: int) -> dict[int, str]:
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid and stat[0] != "Z":
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
    return out


def test_the_loader_process_dies_with_a_killed_daemon(cli, tmp_path):
    import os
    import signal

    from tests.real_daemon import pid_alive

    port = free_port()
    yaml_text = (f"- name: loaded\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"
                 f"  networking:\n    local_port: {port}\n")
    project = write_project(tmp_path / "l", yaml_text, {"predictor.py": OK_PREDICTOR})
    cli("up", "-d", "--backend", "process", "--wait", "60", str(project), check=True)
    daemon = cli.status()["daemon"]["pid"]
    (project / "cortex.yaml").write_text(yaml_text + "  compute:\n    cpu: .nan\n")  # a reload: the loader starts
    cli.wait_for(lambda s: s["daemon"]["config_error"], timeout=30, what="the save rejected")
    [loader] = [pid for pid, cmd in children(daemon).items() if "multiprocessing.spawn" in cmd]
    os.kill(daemon, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(loader) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(loader)
