"""process_guard's pure decisions: which zombies the daemon reaps, who descends from it."""

from __future__ import annotations

from cortexd.daemon.process_guard import descends_from, orphans_to_reap


def fake_proc(tmp_path, parents: dict[int, int]) -> str:
    for pid, ppid in parents.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (py thon) S {ppid} {pid} {pid} 0\n")
    return str(tmp_path)


def test_a_zombie_is_reaped_only_when_nobody_waited_for_it_since_the_last_tick():
    # 10: seen at the last tick and still there; 11: new (its waiter may be about to reap it);
    # 12: lingering but asyncio's child watcher waits on it
    assert orphans_to_reap({10, 11, 12}, seen_before={10, 12}, waited={12}) == {10}
    assert orphans_to_reap(set(), seen_before={10}, waited=set()) == set()


def test_an_orphan_re_parented_to_the_daemon_descends_from_it_and_a_cli_does_not(tmp_path):
    # 100 the daemon; 200 a replica; 300 its orphaned grandchild (re-parented to 100);
    # 400 a CLI started by a shell (50) that init (1) runs
    proc = fake_proc(tmp_path, {100: 1, 200: 100, 250: 200, 300: 100, 50: 1, 400: 50})
    assert descends_from(250, 100, proc) and descends_from(300, 100, proc)
    assert not descends_from(400, 100, proc)
    assert not descends_from(999, 100, proc)  # gone meanwhile
