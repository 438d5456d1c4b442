"""The daemon as a child subreaper (process_guard.py): it reaps the orphans it adopts and
never steals the exit status of asyncio's own children. Run in a child interpreter, so the
test process itself never becomes a subreaper."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import asyncio, json, os
    from cortexd.daemon.process_guard import OrphanReaper, descends_from, guard_daemon_process, zombie_children

    async def main():
        assert guard_daemon_process()
        reaper = OrphanReaper(interval=0.1)
        task = asyncio.ensure_future(reaper.run())
        # sh leaves a background sleep: the orphan is re-parented to us, then exits (a zombie)
        orphan = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.3 & echo $!; exit 0",
                                                      stdout=asyncio.subprocess.PIPE)
        orphan_pid = int((await orphan.stdout.readline()).decode())
        await orphan.wait()
        adopted = descends_from(orphan_pid, os.getpid())
        # asyncio's own child, exiting while the reaper runs: its exit code must arrive
        own = [await asyncio.create_subprocess_exec("sh", "-c", f"sleep 0.{i}; exit 3") for i in range(1, 8)]
        codes = [await p.wait() for p in own]
        await asyncio.sleep(1.0)
        task.cancel()
        print(json.dumps({"adopted": adopted, "codes": codes, "zombies": sorted(zombie_children(os.getpid())),
                          "reaped": reaper.reaped}))

    asyncio.run(main())
''')


def test_the_daemon_reaps_adopted_orphans_and_leaves_asyncios_children_to_asyncio():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["adopted"] is True
    assert seen["codes"] == [3] * 7  # none stolen (a stolen one reads 255, with a warning)
    assert seen["zombies"] == [] and seen["reaped"] >= 1, seen
    assert "Unknown child process" not in done.stderr
