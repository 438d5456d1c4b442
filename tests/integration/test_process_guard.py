"""The daemon as a child subreaper (process_guard.py): it reaps the orphans it adopts, kills
the live ones at shutdown, and never steals the exit status of asyncio's own children. Run in
a child interpreter, so the test process itself never becomes a subreaper."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import asyncio, json, os
    from cortexd.daemon.process_guard import (OrphanReaper, descends_from, guard_daemon_process, waited_by_others,
                                               zombie_children)

    async def main():
        assert guard_daemon_process()
        reaper = OrphanReaper(interval=0.1)
        task = asyncio.ensure_future(reaper.run())
        # sh leaves a background sleep: the orphan is re-parented to us, then exits (a zombie);
        # 1 s: still alive when descends_from looks, even on a loaded machine
        orphan = await asyncio.create_subprocess_exec("sh", "-c", "sleep 1 & echo $!; exit 0",
                                                      stdout=asyncio.subprocess.PIPE)
        orphan_pid = int((await orphan.stdout.readline()).decode())
        await orphan.wait()
        adopted = descends_from(orphan_pid, os.getpid())
        # asyncio's own child, exiting while the reaper runs: its exit code must arrive
        own = [await asyncio.create_subprocess_exec("sh", "-c", f"sleep 0.{i}; exit 3") for i in range(1, 8)]
        codes = [await p.wait() for p in own]
        await asyncio.sleep(2.0)  # the orphan exits and is reaped meanwhile
        task.cancel()
        # a daemonized process still running at shutdown: killed and reaped
        lingering = await asyncio.create_subprocess_exec("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; exit 0",
                                                         stdout=asyncio.subprocess.PIPE)
        lingering_pid = int((await lingering.stdout.readline()).decode())
        await lingering.wait()
        own = await asyncio.create_subprocess_exec("sleep", "60")  # asyncio's, still awaited: left alone
        ended = reaper.end_adopted(waited_by_others() | {own.pid})
        own.kill()
        await own.wait()
        print(json.dumps({"adopted": adopted, "codes": codes, "zombies": sorted(zombie_children(os.getpid())),
                          "reaped": reaper.reaped, "ended": ended, "lingering": lingering_pid,
                          "lingering_gone": not os.path.exists(f"/proc/{lingering_pid}")}))

    asyncio.run(main())
''')


@pytest.mark.parametrize("run", ["asyncio.run", "uvloop.run"])  # the daemon's loop is uvloop's
def test_the_daemon_reaps_adopted_orphans_and_leaves_asyncios_children_to_asyncio(run):
    script = SCRIPT.replace("asyncio.run(main())", f"import uvloop; {run}(main())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["adopted"] is True
    assert seen["codes"] == [3] * 7  # none stolen (a stolen one reads 255, with a warning)
    assert seen["zombies"] == [] and seen["reaped"] >= 1, seen
    assert "Unknown child process" not in done.stderr
    assert seen["ended"] == [seen["lingering"]] and seen["lingering_gone"], seen



LOADER = textwrap.dedent('''
    import concurrent.futures, multiprocessing, os
    from cortexd.daemon.projects import die_with

    with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with, initargs=(os.getpid(),)) as loader:
        pid = loader.submit(os.getpid).result(timeout=60)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                print("read" if b"PATH=" in f.read() else "empty")
        except OSError as e:
            print(type(e).__name__)
''')


def as_same_uid_user() -> list[str]:
    """The command prefix that makes this process and its children what a same-uid user is to
    each other: root without capabilities (root with them reads every process's /proc files)."""
    import os
    import shutil

    if os.getuid() != 0:
        return []
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test this as root"
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def test_the_config_loader_holding_the_daemons_environment_is_not_readable_in_proc():
    done = subprocess.run([*as_same_uid_user(), sys.executable, "-c", LOADER], capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PermissionError", done.stdout
