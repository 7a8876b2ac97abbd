"""The pure fleet accounting: tiers, cost, rollups and the documents built from them."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.fleet import (
    AppliedGroup,
    CostModel,
    CostSums,
    EvalGroup,
    LedgerBucket,
    PowerTableError,
    TaskRollup,
    VersionRow,
    cost_fields,
    gap,
    normalize_tier,
    parse_power_table,
    tier_table,
    timeline_doc,
    version_docs,
)
from server.fleet.cost import MAX_ENERGY_J, MAX_TRAIN_S
from server.fleet.tiers import MAX_TIERS, OTHER, UNKNOWN

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.integers()),
)
tier_names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


@given(anything)
def test_any_reported_tier_becomes_a_safe_name_or_unknown(raw: object) -> None:
    name = normalize_tier(raw)

    assert name == UNKNOWN or NAME.match(name)
    assert normalize_tier(name) == name


@given(st.dictionaries(tier_names, st.floats(0, 1e4)))
def test_a_power_table_parses_back_to_itself(table: dict[str, float]) -> None:
    text = ",".join(f"{tier}={watts!r}" for tier, watts in table.items())

    assert parse_power_table(text) == table


@given(st.text(max_size=40))
def test_a_bad_power_table_is_refused_with_one_error(text: str) -> None:
    try:
        table = parse_power_table(text)
    except PowerTableError:
        return
    assert all(NAME.match(t) and math.isfinite(w) and w >= 0 for t, w in table.items())


@given(st.dictionaries(st.sampled_from(["train_s", "energy_j", "download_bytes", "x"]), anything))
def test_cost_fields_keep_only_believable_reports(metrics: dict[str, object]) -> None:
    fields = cost_fields(metrics, 123)

    assert fields["bytes_up"] == 123
    for name, limit in (("train_s", MAX_TRAIN_S), ("energy_j", MAX_ENERGY_J)):
        value = fields[name]
        assert value is None or (math.isfinite(value) and 0 <= value <= limit)
    assert fields["bytes_down"] is None or fields["bytes_down"] >= 0


def test_energy_is_estimated_from_the_tiers_power_when_not_reported() -> None:
    model = CostModel({"low": 2.0}, default_power_w=4.0, grid_g_per_kwh=500.0)
    rollup = TaskRollup("t", model)
    rollup.add_applied(
        [
            AppliedGroup(
                1,
                "low",
                3,
                train_s=10.0,
                timed=3,
                metered_j=7.0,
                metered=1,
                unmetered_train_s=6.0,
                unmetered_timed=2,
            ),
            AppliedGroup(
                1, "odd", 1, train_s=2.0, timed=1, unmetered_train_s=2.0, unmetered_timed=1
            ),
        ],
        upto=1,
    )
    rows = {r["tier"]: r for r in tier_table(rollup, {})}

    assert rows["low"]["energy_j"] == 7.0 + 6.0 * 2.0
    assert rows["odd"]["energy_j"] == 2.0 * 4.0
    assert rows["low"]["co2e_g"] == pytest.approx(19.0 / 3.6e6 * 500.0)


groups = st.lists(
    st.builds(
        AppliedGroup,
        version=st.integers(1, 6),
        tier=st.sampled_from(["low", "mid", "high", None]),
        updates=st.integers(1, 5),
        staleness_sum=st.integers(0, 20).map(float),
        staleness_n=st.integers(0, 5),
        train_s=st.integers(0, 100).map(float),  # whole numbers: sums are exact
        unmetered_train_s=st.integers(0, 100).map(float),
        bytes_up=st.integers(0, 10**6),
    ),
    max_size=20,
)


@given(groups, st.integers(0, 6))
def test_folding_in_two_reads_equals_folding_at_once(parts: list[AppliedGroup], cut: int) -> None:
    once, twice = TaskRollup("t", CostModel()), TaskRollup("t", CostModel())
    once.add_applied(parts, upto=6)
    twice.add_applied([g for g in parts if g.version <= cut], upto=cut)
    twice.add_applied([g for g in parts if g.version > cut], upto=6)

    assert tier_table(once, {}) == tier_table(twice, {})
    assert version_docs(once) == version_docs(twice)


@given(st.integers(MAX_TIERS + 1, MAX_TIERS + 10))
def test_tiers_beyond_the_limit_are_summed_as_other(count: int) -> None:
    rollup = TaskRollup("t", CostModel())
    rollup.add_applied([AppliedGroup(1, f"t{i}", i + 1) for i in range(count)], upto=1)
    rows = tier_table(rollup, {})

    assert len(rows) == MAX_TIERS and OTHER in {r["tier"] for r in rows}
    assert sum(r["updates"] for r in rows) == sum(range(1, count + 1))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 500),
            st.sampled_from(["applied", "dropped", "rejected"]),
            st.integers(1, 9),
        ),
        max_size=30,
    ),
    st.sampled_from([10, 20, 60, 300]),
)
def test_coarser_timeline_buckets_keep_every_count(
    rows: list[tuple[int, str, int]], size: int
) -> None:
    rollup = TaskRollup("t", CostModel())
    refused = [(t, s, n) for t, s, n in rows if s != "applied"]
    rollup.set_ledger([LedgerBucket(t * 10, s, "too_stale", n) for t, s, n in refused], since=0)
    rollup.add_arrivals([(0, t * 10, n) for t, s, n in rows if s == "applied"])
    fine, coarse = timeline_doc(rollup, bucket_s=10), timeline_doc(rollup, bucket_s=size)

    for key in ("accepted", "dropped"):
        assert sum(b[key] for b in fine["buckets"]) == sum(b[key] for b in coarse["buckets"])
    rejected = [sum(b["rejected"].values()) for b in coarse["buckets"]]
    assert sum(rejected) == sum(n for _, s, n in rows if s == "rejected")
    assert all(b["t"] % size == 0 for b in coarse["buckets"])


def test_the_gap_is_best_minus_worst_tier_pooled_over_a_window() -> None:
    rollup = TaskRollup("t", CostModel())
    rollup.add_versions([VersionRow(v, float(v), 2, 0.0, None) for v in range(1, 4)])
    rollup.set_evaluations(
        [
            EvalGroup(1, "low", 1, 10, 5.0, 5.0, 10),  # 50%
            EvalGroup(2, "low", 1, 10, 5.0, 7.0, 10),  # 70%: pooled 60%
            EvalGroup(2, "high", 2, 20, 5.0, 18.0, 20),  # 90%
        ],
        from_version=0,
    )
    docs = {d["version"]: d for d in version_docs(rollup)}

    assert docs[1]["gap"] is None  # one tier only
    assert docs[2]["gap"] == {"best": "high", "worst": "low", "gap": pytest.approx(0.3)}
    assert gap({"a": 0.5, "b": None}) is None


def test_cost_sums_add_up() -> None:
    a, b = (
        CostSums(updates=1, metered_j=2.0, metered=1),
        CostSums(updates=2, estimated_j=3.0, estimated=2),
    )
    a.add(b)

    assert a.to_dict(1000.0)["energy_j"] == 5.0
    assert a.to_dict(1000.0)["updates_unknown"] == 0
