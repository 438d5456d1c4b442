"""The project watcher on a real folder: real watchdog events, the real debounce.

An editor's burst of writes reloads once; files that do not count never reload.
What counts as an edit (pure rules): tests/unit/test_watcher.py.
"""

from __future__ import annotations

import asyncio

import pytest

from cortexd.daemon.watcher import ProjectWatcher


async def test_a_burst_of_events_reloads_once(tmp_path):
    calls = []

    async def on_change(paths):
        calls.append(paths)

    # 1 s: wide of a stall in the middle of the burst on a loaded machine (that would be two bursts)
    watcher = ProjectWatcher([str(tmp_path)], on_change, debounce=1.0)
    watcher.start()
    try:
        for i in range(5):  # an editor's save: temp file, write, rename
            (tmp_path / "predictor.py.tmp").write_text(str(i))
            (tmp_path / "predictor.py").write_text(str(i))
            await asyncio.sleep(0.02)
        deadline = asyncio.get_running_loop().time() + 5
        while not calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # past another debounce: no second reload comes
    finally:
        await watcher.stop()
    assert len(calls) == 1
    assert any(p.endswith("predictor.py") for p in calls[0])
    assert not any(p.endswith(".tmp") for p in calls[0])


async def test_paths_that_do_not_count_never_reload(tmp_path):
    calls = []

    async def on_change(paths):
        calls.append(paths)

    watcher = ProjectWatcher([str(tmp_path)], on_change, debounce=0.2, counts=lambda p: p.endswith(".py"))
    watcher.start()
    try:
        (tmp_path / "cache.json").write_text("{}")
        await asyncio.sleep(0.6)
        assert calls == []
        (tmp_path / "predictor.py").write_text("A = 2\n")
        deadline = asyncio.get_running_loop().time() + 5
        while not calls and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await watcher.stop()
    assert calls and all(p.endswith("predictor.py") for p in calls[0])


@pytest.mark.exclusive  # the first reload's time is bounded (max_wait)
async def test_saves_that_never_pause_are_served_every_max_wait(tmp_path):
    calls = []

    async def on_change(paths):
        calls.append(asyncio.get_running_loop().time())

    # a save every 0.1 s for 3 s never leaves a 0.5 s pause: without a cap no reload came until
    # the saves stopped
    watcher = ProjectWatcher([str(tmp_path)], on_change, debounce=0.5, max_wait=1.0)
    watcher.start()
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        i = 0
        while loop.time() - start < 3.0:
            (tmp_path / "predictor.py").write_text(str(i))
            i += 1
            await asyncio.sleep(0.1)
        stopped = loop.time()
        await asyncio.sleep(1.0)
    finally:
        await watcher.stop()
    during = [t for t in calls if t < stopped]
    assert len(during) >= 2, (calls, start, stopped)  # about one each second while saving
    assert during[0] - start < 2.0, (calls, start)
