"""The weighted choice of a traffic splitter (core.splitting), its table in the gateway (routes.SplitRoute)
kept current by the route book, and what `get` says of it (status, text)."""

from __future__ import annotations

import random
from collections import Counter

from cortexd.core.api_status import Failure
from cortexd.core.splitting import pick_target, share_notes, split_table
from cortexd.gateway.route_book import RouteBook
from cortexd.gateway.routes import RouteConfig, SplitConfig, SplitRoute, port_table
from cortexd.spec.model import NetworkingSpec, SplitTarget, SplitterSpec
from cortexd.status import APIStatus, SplitterFacts, build_splitter_status
from cortexd.ui.text import splitter_detail, splitter_table


def test_the_table_holds_the_live_targets_cumulative_weights():
    table = split_table([70, 30], [False, False])
    assert table.live == (0, 1) and table.total == 100 and table.cumulative[0] == 70
    assert table.cumulative[-1] == float("inf")  # r * total rounding up to total still picks the last
    assert table.shares == (70.0, 30.0)
    assert [pick_target(table.cumulative, table.total, r) for r in (0.0, 0.6999, 0.7, 0.9999999)] == [0, 0, 1, 1]


def test_a_seeded_rng_splits_by_the_weights():
    table = split_table([70, 30], [False, False])
    rng = random.Random(18)
    counts = Counter(table.live[pick_target(table.cumulative, table.total, rng.random())] for _ in range(100_000))
    assert abs(counts[0] / 100_000 - 0.70) < 0.01 and abs(counts[1] / 100_000 - 0.30) < 0.01


def test_a_down_target_share_goes_to_the_live_ones_in_proportion():
    table = split_table([70, 20, 10], [False, True, False])
    assert table.live == (0, 2) and table.total == 80
    assert table.shares == (87.5, 0.0, 12.5)
    rng = random.Random(3)
    picks = Counter(table.live[pick_target(table.cumulative, table.total, rng.random())] for _ in range(50_000))
    assert set(picks) == {0, 2} and abs(picks[0] / 50_000 - 0.875) < 0.01


def test_weight_zero_never_takes_traffic_and_nothing_live_is_an_empty_table():
    table = split_table([100, 0], [False, False])
    assert table.live == (0,)
    empty = split_table([100, 0], [True, False])
    assert empty.live == () and empty.cumulative == () and empty.shares == (0.0, 0.0)


def test_share_notes_say_where_a_down_apis_weight_goes():
    assert share_notes([("a", 70), ("b", 30)], {"b": "is in error"}) == [
        "api 'b' is in error; its 30% goes to the others (now a 100%)"]
    assert share_notes([("a", 70), ("b", 30)], {"a": "is not deployed", "b": "is in error"}) == [
        "api 'a' is not deployed", "api 'b' is in error",
        "no api can take requests: they get 503 until one is live again"]
    assert share_notes([("a", 70), ("b", 30)], {}) == []


class _Pool:
    def close(self) -> None:
        pass


def book_with(*apis: str) -> RouteBook:
    book = RouteBook(lambda address: _Pool())  # type: ignore[arg-type, return-value]
    book.update({a: RouteConfig(a, f"/{a}", 8888, 10) for a in apis},
                {"ab": SplitConfig("ab", "/ab", 8888, (("a", 70, False), ("b", 30, False), ("s", 100, True)))})
    return book


def test_the_route_book_keeps_each_splitter_current_with_its_apis():
    book = book_with("a", "b", "s")
    split = book.splits["ab"]
    assert [t.name for t in split.live] == ["a", "b"] and split.shadow is not None
    book.set_state("b", starting=False, failure=Failure.CRASHED)  # in error, no ready replica
    assert [t.name for t in split.live] == ["a"] and split.shares == {"a": 100.0, "b": 0.0}
    assert split.targets[1].down == "is in error"
    book.set_replicas("b", [("r1", "127.0.0.1", 1)])
    book.set_state("b", starting=False)
    assert [t.name for t in split.live] == ["a", "b"]
    book.update({"a": RouteConfig("a", "/a", 8888, 10)}, {"ab": SplitConfig("ab", "/ab", 8888,
                                                                             (("a", 50, False), ("b", 50, False)))})
    assert book.splits["ab"] is split  # changed in place: port tables keep serving it
    assert [t.name for t in split.live] == ["a"] and split.targets[1].down == "is not deployed"
    book.set_state("a", starting=False, failure=Failure.OOM)
    assert split.choose() is None


def test_a_weight_change_keeps_the_counters_and_applies_to_the_next_request():
    book = book_with("a", "b", "s")
    split = book.splits["ab"]
    split.targets[0].metrics.record(200, 0.01, 1.0)
    book.update({a: RouteConfig(a, f"/{a}", 8888, 10) for a in "abs"},
                {"ab": SplitConfig("ab", "/ab", 8888, (("a", 0, False), ("b", 100, False)))})
    assert split.targets[0].metrics.codes == {200: 1}
    assert all(split.choose().name == "b" for _ in range(200))  # type: ignore[union-attr]


def test_a_splitter_sits_in_its_port_table_and_alone_also_at_root():
    split = SplitRoute(SplitConfig("ab", "/ab", 9000, (("a", 100, False),)))
    assert port_table([split]) == {"/ab": split, "/ab/": split, "/": split}


def test_choose_uses_the_splitters_rng():
    split = SplitRoute(SplitConfig("ab", "/ab", 9000, (("a", 70, False), ("b", 30, False))),
                       rng=random.Random(7).random)
    book = RouteBook(lambda address: _Pool())  # type: ignore[arg-type, return-value]
    book.update({n: RouteConfig(n, f"/{n}", 9000, 10) for n in "ab"})
    split.refresh(book.routes)
    counts = Counter(split.choose().name for _ in range(20_000))  # type: ignore[union-attr]
    assert abs(counts["a"] / 20_000 - 0.7) < 0.02


def splitter_spec() -> SplitterSpec:
    return SplitterSpec("ab", (SplitTarget("a", 70, line=4), SplitTarget("b", 30, line=6),
                               SplitTarget("s", 100, True, line=8)),
                        NetworkingSpec("/ab", 8888), "/p/cortex.yaml", 1, raw={"name": "ab"})


def test_status_and_get_say_a_down_api_and_where_its_share_goes(tmp_path):
    from tests.unit.snapshots import api

    def api_status(name: str, status: str = "live") -> APIStatus:
        return APIStatus.from_json(api(name, status))

    traffic = {"refused": 2, "targets": {
        "a": {"down": None, "share": 100.0, "dropped": 0, "requests": {"total": 7, "2xx": 7, "4xx": 0, "5xx": 0}},
        "b": {"down": "is in error", "share": 0.0, "dropped": 0, "requests": {"total": 3, "2xx": 1, "5xx": 2}},
        "s": {"down": None, "share": 0.0, "dropped": 4, "requests": {"total": 6, "2xx": 6}}}}
    apis = {"a": api_status("a"), "b": api_status("b", status="error"), "s": api_status("s")}
    status = build_splitter_status(SplitterFacts(splitter_spec(), "http://127.0.0.1:8888/ab", traffic), apis)
    assert status.status == "degraded" and status.refused == 2
    assert [(t.name, t.status, t.share, t.down) for t in status.targets] == [
        ("a", "live", 100.0, None), ("b", "error", 0.0, "is in error"), ("s", "live", 0.0, None)]
    assert status.notes == ("api 'b' is in error; its 30% goes to the others (now a 100%)",)
    text = splitter_detail(status)
    assert "traffic splitter: ab (degraded)" in text
    assert "api 'b' is in error; its 30% goes to the others" in text
    assert "shadow s: 4 copies dropped" in text
    row = next(line for line in text.splitlines() if line.startswith("b "))
    assert row.split() == ["b", "30", "0%", "error", "3", "-", "1/0/2"]
    assert "a:70 b:30(down) s:100(shadow)" in splitter_table((status,))


def test_a_splitter_with_no_live_api_is_down():
    apis = {}
    status = build_splitter_status(SplitterFacts(splitter_spec(), "u", {}), apis)
    assert status.status == "down"
    assert "no api can take requests: they get 503 until one is live again" in status.notes
    assert "shadow api 's' is not deployed; its copies are dropped" in status.notes


def test_the_live_view_shows_splitters_their_apis_and_where_a_share_went():
    from io import StringIO

    from rich.console import Console

    from cortexd.status import Status
    from cortexd.ui.view import status_view
    from tests.unit.snapshots import NOW, api, snapshot

    split = build_splitter_status(SplitterFacts(splitter_spec(), "http://127.0.0.1:8888/ab", {"targets": {
        "a": {"down": None, "share": 100.0, "requests": {"total": 9, "2xx": 9, "requests_per_s": 1.5}},
        "b": {"down": "is in error", "share": 0.0, "requests": {}},
        "s": {"down": None, "share": 0.0, "dropped": 1, "requests": {"total": 8, "2xx": 8}}}}),
        {"a": APIStatus.from_json(api("a")), "b": APIStatus.from_json(api("b", "error"))})
    snap = Status.from_json({**snapshot([api("a"), api("b", "error")]), "splitters": [split.to_json()]})
    for width in (80, 120):
        console = Console(file=StringIO(), width=width, color_system=None, legacy_windows=False)
        console.print(status_view(snap, NOW))
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert max(len(line) for line in text.splitlines()) <= width
        rows = [line.split() for line in text.splitlines()]
        assert ["ab", "degraded", "a", "70", "100%", "1.5", "9/0/0"] in rows
        assert ["b", "30", "0%", "-", "-"] in rows and ["s", "100s", "copy", "-", "8/0/0"] in rows
        assert "ab: api 'b' is in error; its 30% goes to the others (now a 100%)" in " ".join(text.split())


def test_a_shadow_copy_is_dropped_never_queued_when_the_shadow_has_no_room():
    from cortexd.gateway.routes import ReplicaTarget
    from cortexd.gateway.shadow import ShadowCopies

    book = book_with("a", "b", "s")
    split = book.splits["ab"]
    shadow = split.shadow
    assert shadow is not None
    copies = ShadowCopies(upstream_timeout=1.0)
    copies.copy(split, shadow, None, "", "rid", b"{}")  # type: ignore[arg-type]  # no replica yet
    assert shadow.dropped == 1 and not copies.tasks
    book.set_replicas("s", [("r1", "127.0.0.1", 1)])
    full: ReplicaTarget = book.routes["s"].replicas[0]
    full.in_flight = 10  # at max_replica_concurrency (10)
    copies.copy(split, shadow, None, "", "rid", b"{}")  # type: ignore[arg-type]
    assert shadow.dropped == 2 and not copies.tasks and full.in_flight == 10
    book.set_state("s", starting=False, failure=Failure.CRASHED)  # in error: dropped too
    copies.copy(split, shadow, None, "", "rid", b"{}")  # type: ignore[arg-type]
    assert shadow.dropped == 3
    shadow.weight = 0  # a 0% shadow gets no copy at all, nothing dropped
    copies.copy(split, shadow, None, "", "rid", b"{}")  # type: ignore[arg-type]
    assert shadow.dropped == 3
