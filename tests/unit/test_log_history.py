"""`cortexd logs API` without --tail: whole lines, capped, with the cut said."""

from __future__ import annotations

from cortexd.daemon import running


def test_history_is_capped_on_a_line_boundary_and_says_where_the_rest_is(tmp_path, monkeypatch):
    log = tmp_path / "r.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    monkeypatch.setattr(running, "HISTORY_CAP", 100)
    lines = running.read_history(log, None)
    assert lines[0].startswith("[cortexd: showing the last") and str(log) in lines[0]
    assert lines[1].startswith("line ") and lines[-1] == "line 999"
    assert sum(len(x) + 1 for x in lines[1:]) <= 100


def test_small_history_is_whole_and_tail_is_respected(tmp_path):
    log = tmp_path / "r.log"
    log.write_text("a\nb\nc\n")
    assert running.read_history(log, None) == ["a", "b", "c"]
    assert running.read_history(log, 2) == ["b", "c"]
    assert running.read_history(tmp_path / "missing.log", None) == []
