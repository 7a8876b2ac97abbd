from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import RejectReason, SyncRoundAggregator
from server.errors import Conflict, UpdateRejected
from tests.aggregation.support import config, flat, model, sync, updates


def refusal(agg: SyncRoundAggregator, update_id: str, base: int, now: float) -> str:
    with pytest.raises(UpdateRejected) as info:
        agg.fold(update_id, updates(1)[0], 5, base, now=now)
    return info.value.code


def test_start_round_sizes_the_cohort_with_over_selection() -> None:
    agg = sync(aggregation_goal=10, over_selection=0.3, round_timeout_s=60)

    state = agg.start_round(now=100.0)

    assert (state.round_id, state.version, state.goal, state.cohort_target) == (1, 0, 10, 13)
    assert (state.selected, state.received, state.deadline) == (0, 0, 160.0)
    assert agg.current_round == state


def test_select_admits_until_the_cohort_is_full_and_is_idempotent() -> None:
    agg = sync(aggregation_goal=2, over_selection=0.5)
    agg.start_round(now=0.0)

    admitted = [agg.select(f"d{i}", now=1.0) for i in range(5)]

    assert admitted == [True, True, True, False, False]
    assert agg.select("d0", now=1.0)
    assert agg.current_round is not None
    assert agg.current_round.selected == 3


def test_select_is_refused_without_an_open_round_or_after_the_deadline() -> None:
    agg = sync(round_timeout_s=10)

    assert not agg.select("d", now=0.0)
    agg.start_round(now=0.0)
    assert not agg.select("d", now=10.5)


def test_round_steps_on_the_goal_th_update_and_closes() -> None:
    agg = sync(aggregation_goal=2)
    agg.start_round(now=0.0)

    first = agg.fold("a", updates(1)[0], 5, 0, now=1.0)
    second = agg.fold("b", updates(1, seed=2)[0], 5, 0, now=2.0)

    assert first.step is None
    assert second.step is not None
    assert second.step.update_ids == ("a", "b")
    assert agg.version == 1
    assert agg.current_round is None
    assert refusal(agg, "c", 0, now=3.0) == RejectReason.ROUND_CLOSED


def test_updates_after_the_deadline_are_late() -> None:
    agg = sync(round_timeout_s=10)
    agg.start_round(now=0.0)

    assert refusal(agg, "late", 0, now=10.01) == RejectReason.LATE
    assert agg.stats.rejected == {"late": 1}


def test_updates_trained_on_another_version_are_not_for_this_round() -> None:
    agg = sync(aggregation_goal=1)
    agg.start_round(now=0.0)
    agg.fold("a", updates(1)[0], 5, 0, now=1.0)
    agg.start_round(now=2.0)

    assert refusal(agg, "old", 0, now=3.0) == RejectReason.NOT_CURRENT_ROUND


def test_no_update_is_accepted_before_the_first_round() -> None:
    assert refusal(sync(), "a", 0, now=0.0) == RejectReason.ROUND_CLOSED


def test_starting_a_round_while_one_is_open_is_a_conflict() -> None:
    agg = sync()
    agg.start_round(now=0.0)

    with pytest.raises(Conflict):
        agg.start_round(now=1.0)


def test_close_if_expired_does_nothing_before_the_deadline() -> None:
    agg = sync(round_timeout_s=10)
    agg.start_round(now=0.0)
    agg.fold("a", updates(1)[0], 5, 0, now=1.0)

    assert agg.close_if_expired(now=9.0) is None
    assert agg.current_round is not None
    assert agg.buffered == 1


def test_a_short_round_steps_at_the_deadline_normalised_by_what_arrived() -> None:
    params, deltas = model(), updates(3)
    agg = SyncRoundAggregator(params, config(mode="sync", aggregation_goal=10, round_timeout_s=5))
    agg.start_round(now=0.0)
    for i, d in enumerate(deltas):
        agg.fold(f"u{i}", d, 5, 0, now=1.0)

    step = agg.close_if_expired(now=5.0)

    assert step is not None
    assert (step.version, step.num_updates) == (1, 3)
    assert agg.current_round is None
    expected = flat(params) + np.mean([flat(d) for d in deltas], axis=0)
    np.testing.assert_allclose(flat(agg.params), expected, rtol=1e-6, atol=1e-7)


def test_a_round_below_min_round_fraction_is_abandoned_without_a_step() -> None:
    params = model()
    agg = SyncRoundAggregator(
        params,
        config(mode="sync", aggregation_goal=10, min_round_fraction=0.5, round_timeout_s=5),
    )
    agg.start_round(now=0.0)
    for i, d in enumerate(updates(4)):
        agg.fold(f"u{i}", d, 5, 0, now=1.0)

    assert agg.close_if_expired(now=6.0) is None

    assert agg.version == 0
    assert agg.current_round is None
    assert agg.buffered == 0
    assert flat(agg.params).tobytes() == flat(params).tobytes()
    assert (agg.stats.rounds_abandoned, agg.stats.updates_dropped) == (1, 4)
    assert agg.has_folded("u0")  # a dropped update is not folded again


def test_an_empty_round_is_abandoned_even_with_min_round_fraction_zero() -> None:
    agg = sync(round_timeout_s=5)
    agg.start_round(now=0.0)

    assert agg.close_if_expired(now=5.0) is None
    assert agg.stats.rounds_abandoned == 1
    assert agg.version == 0


def test_enough_updates_at_the_deadline_step() -> None:
    agg = sync(aggregation_goal=10, min_round_fraction=0.5, round_timeout_s=5)
    agg.start_round(now=0.0)
    for i, d in enumerate(updates(5)):
        agg.fold(f"u{i}", d, 5, 0, now=1.0)

    step = agg.close_if_expired(now=7.0)

    assert step is not None
    assert step.num_updates == 5


def test_round_ids_increase_across_rounds() -> None:
    agg = sync(round_timeout_s=1)
    agg.start_round(now=0.0)
    agg.close_if_expired(now=1.0)

    assert agg.start_round(now=2.0).round_id == 2


@pytest.mark.parametrize(
    ("goal", "over", "target"), [(100, 0.1, 110), (10, 0.3, 13), (3, 0.0, 3), (7, 0.15, 9)]
)
def test_the_cohort_is_sized_in_exact_decimal_arithmetic(
    goal: int, over: float, target: int
) -> None:
    agg = sync(aggregation_goal=goal, over_selection=over)
    assert agg.cohort_target == target


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 100_000),
    st.decimals(min_value=0, max_value=10, places=4, allow_nan=False, allow_infinity=False),
)
def test_the_cohort_is_the_ceiling_of_goal_times_one_plus_the_written_decimal(
    goal: int, over: Decimal
) -> None:
    agg = sync(aggregation_goal=goal, over_selection=float(over))
    exact = Fraction(goal) * (1 + Fraction(over))
    assert agg.cohort_target == math.ceil(exact)
    assert agg.cohort_target >= goal
