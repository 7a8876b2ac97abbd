"""``fold_flat``: an update as one flat vector folds exactly as its tensors would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from server.aggregation import FedBuffAggregator, RejectReason, SyncRoundAggregator
from server.errors import UpdateRejected
from tests.aggregation.support import config, model, updates


def _flat(tensors: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([t.reshape(-1) for t in tensors])


def _async_pair(**kwargs: Any) -> tuple[FedBuffAggregator, FedBuffAggregator]:
    cfg = config(aggregation_goal=3, optimizer={"name": "fedavgm", "momentum": 0.9}, **kwargs)
    return FedBuffAggregator(model(), cfg), FedBuffAggregator(model(), cfg)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"clip_norm": 0.05},  # the general path: clipped
        {"example_weighting": {"kind": "linear"}},
        {"max_update_norm": 10.0},
    ],
)
def test_async_flat_folds_give_the_state_tensor_folds_give(kwargs: dict[str, Any]) -> None:
    by_tensor, by_flat = _async_pair(**kwargs)
    bases = [0, 0, 0, 1, 0, 1, 2, 1, 2]

    for i, (tensors, base) in enumerate(zip(updates(len(bases)), bases, strict=True)):
        want = by_tensor.fold(f"u{i}", tensors, 3 + i, base)
        got = by_flat.fold_flat(f"u{i}", _flat(tensors), 3 + i, base)
        assert (got.staleness, got.weight, got.clipped) == (
            want.staleness,
            want.weight,
            want.clipped,
        )
        assert got.norm == pytest.approx(want.norm, rel=1e-6)
        assert (got.step is None) == (want.step is None)

    a, b = by_tensor.state(), by_flat.state()
    assert np.array_equal(a["params"], b["params"])  # bit for bit
    assert np.array_equal(a["buffer"]["total"], b["buffer"]["total"])
    assert a["counts"] == b["counts"] and a["buffer"]["ids"] == b["buffer"]["ids"]


def test_sync_flat_folds_give_the_state_tensor_folds_give() -> None:
    cfg = config(mode="sync", aggregation_goal=3)
    by_tensor, by_flat = SyncRoundAggregator(model(), cfg), SyncRoundAggregator(model(), cfg)
    for agg in (by_tensor, by_flat):
        agg.start_round(now=0.0)

    for i, tensors in enumerate(updates(3)):
        want = by_tensor.fold(f"u{i}", tensors, 4, 0, now=1.0 + i)
        got = by_flat.fold_flat(f"u{i}", _flat(tensors), 4, 0, now=1.0 + i)
        assert (got.weight, got.step is None) == (want.weight, want.step is None)

    assert by_flat.version == by_tensor.version == 1
    assert np.array_equal(by_tensor.state()["params"], by_flat.state()["params"])


@pytest.mark.parametrize(
    ("flat", "base", "code"),
    [
        (np.full(25, np.nan, dtype=np.float32), 0, RejectReason.NON_FINITE),
        (np.zeros(24, dtype=np.float32), 0, RejectReason.SHAPE_MISMATCH),
        (np.zeros(25, dtype=np.float64), 0, RejectReason.DTYPE_MISMATCH),
        (np.zeros(25, dtype=np.float32), 5, RejectReason.FUTURE_VERSION),
    ],
)
def test_a_flat_update_is_refused_as_its_tensors_would_be(
    flat: np.ndarray, base: int, code: RejectReason
) -> None:
    agg, _ = _async_pair()

    with pytest.raises(UpdateRejected) as info:
        agg.fold_flat("u", flat, 4, base)

    assert info.value.code == code
    assert agg.buffered == 0


def test_a_flat_update_folded_twice_is_a_duplicate() -> None:
    agg, _ = _async_pair()
    flat = _flat(updates(1)[0])
    agg.fold_flat("u", flat, 4, 0)

    with pytest.raises(UpdateRejected) as info:
        agg.fold_flat("u", flat, 4, 0)

    assert info.value.code == RejectReason.DUPLICATE_UPDATE
