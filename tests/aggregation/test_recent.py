from __future__ import annotations

from server.aggregation.recent import RecentIds


def test_the_window_keeps_the_newest_ids_in_order() -> None:
    recent = RecentIds(3, ["a", "b"])

    recent.extend(["c", "d", "e"])

    assert list(recent) == ["c", "d", "e"]
    assert "e" in recent and "c" in recent
    assert "b" not in recent and "a" not in recent


def test_a_zero_window_remembers_nothing() -> None:
    recent = RecentIds(0, ["a"])

    recent.extend(["b"])

    assert len(recent) == 0 and "b" not in recent
