from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest

from client_sdk.wire import decode_tensors, encode_tensors
from server.aggregation import (
    FedBuffAggregator,
    ModelSpec,
    RejectReason,
    validate_update,
)
from server.errors import ConfigError, UpdateRejected
from tests.aggregation.support import SHAPES, fedbuff, snapshot, updates

SPEC = ModelSpec.of(SHAPES)


def good() -> list[np.ndarray]:
    return updates(1)[0]


def replace(i: int, tensor: Any) -> list[Any]:
    tensors: list[Any] = good()
    tensors[i] = tensor
    return tensors


def with_nan() -> list[np.ndarray]:
    tensors = good()
    tensors[1][2] = np.nan
    return tensors


def with_inf() -> list[np.ndarray]:
    tensors = good()
    tensors[2][1, 1, 0] = -np.inf
    return tensors


BAD_UPDATES: list[tuple[str, Callable[[], list[Any]]]] = [
    ("tensor_count", lambda: good()[:2]),
    ("tensor_count", lambda: [*good(), np.zeros(1, np.float32)]),
    ("tensor_count", lambda: np.zeros((3, 4), np.float32)),  # type: ignore[arg-type,return-value]
    ("shape_mismatch", lambda: replace(0, np.zeros((4, 3), np.float32))),
    ("shape_mismatch", lambda: replace(1, np.zeros((5, 1), np.float32))),
    ("dtype_mismatch", lambda: replace(1, np.zeros(5, np.float64))),
    ("dtype_mismatch", lambda: replace(1, np.zeros(5, ">f4"))),
    ("dtype_mismatch", lambda: replace(1, [0.0] * 5)),
    ("non_finite", with_nan),
    ("non_finite", with_inf),
]


@pytest.mark.parametrize(("reason", "make"), BAD_UPDATES)
def test_validate_update_refuses_with_a_stable_reason(
    reason: str, make: Callable[[], list[Any]]
) -> None:
    with pytest.raises(UpdateRejected) as info:
        validate_update(SPEC, make())

    assert info.value.code == reason == RejectReason(reason)
    assert info.value.status == 422


def test_validate_update_returns_the_l2_norm() -> None:
    tensors = good()

    norm = validate_update(SPEC, tensors)

    expected = np.sqrt(sum(float(np.sum(t.astype(np.float64) ** 2)) for t in tensors))
    assert norm == pytest.approx(expected, rel=1e-5)


def test_norm_above_the_hard_bound_is_refused() -> None:
    tensors = good()
    norm = validate_update(SPEC, tensors)

    with pytest.raises(UpdateRejected) as info:
        validate_update(SPEC, tensors, max_norm=norm * 0.99)

    assert info.value.code == RejectReason.NORM_EXCEEDED


def test_huge_finite_values_are_measured_not_called_non_finite() -> None:
    tensors = replace(1, np.full(5, 1e30, np.float32))  # squares overflow float32

    norm = validate_update(SPEC, tensors)

    assert norm == pytest.approx(np.sqrt(5) * 1e30, rel=1e-5)


def rejection_of(agg: FedBuffAggregator, *args: Any) -> UpdateRejected:
    with pytest.raises(UpdateRejected) as info:
        agg.fold(*args)
    return info.value


def state_without_rejections(agg: FedBuffAggregator) -> dict[str, Any]:
    state = msgpack.unpackb(snapshot(agg))
    del state["rejected"]
    return state


@pytest.mark.parametrize(("reason", "make"), BAD_UPDATES)
def test_a_refused_update_changes_nothing_but_the_rejection_count(
    reason: str, make: Callable[[], list[Any]]
) -> None:
    agg = fedbuff(aggregation_goal=3, max_update_norm=1e6)
    for i, u in enumerate(updates(2)):
        agg.fold(f"ok{i}", u, 10, 0)
    before = state_without_rejections(agg)

    error = rejection_of(agg, "bad", make(), 10, 0)

    assert error.code == reason
    assert state_without_rejections(agg) == before
    assert agg.stats.rejected == {reason: 1}
    assert not agg.has_folded("bad")


@pytest.mark.parametrize(
    ("kwargs", "args", "reason", "status"),
    [
        ({}, ("ok0", updates(1)[0], 10, 0), "duplicate_update", 409),
        ({}, ("x", updates(1)[0], 10, 5), "future_version", 409),
        ({"max_staleness": 0}, ("x", updates(1)[0], 10, 0), "too_stale", 409),
        ({}, ("x", updates(1)[0], 10, -1), "too_stale", 409),
        ({}, ("x", updates(1)[0], 0, 1), "bad_num_examples", 400),
        ({}, ("x", updates(1)[0], 10**12, 1), "bad_num_examples", 400),
        ({}, ("x", updates(1)[0], 2.5, 1), "bad_num_examples", 400),
        ({}, ("x", updates(1)[0], True, 1), "bad_num_examples", 400),
        ({"max_update_norm": 1e-3}, ("x", updates(1)[0], 10, 0), "norm_exceeded", 422),
    ],
)
def test_fold_refuses_ids_versions_and_counts_it_cannot_accept(
    kwargs: dict[str, Any], args: tuple[Any, ...], reason: str, status: int
) -> None:
    agg = fedbuff(aggregation_goal=1, **kwargs)
    if "max_update_norm" not in kwargs:
        agg.fold("ok0", updates(1, seed=9)[0], 10, 0)  # now at version 1
    before = state_without_rejections(agg)

    error = rejection_of(agg, *args)

    assert (error.code, error.status) == (reason, status)
    assert state_without_rejections(agg) == before


def test_refusal_reasons_are_stable_strings() -> None:
    assert {r.value for r in RejectReason} >= {
        "tensor_count",
        "shape_mismatch",
        "dtype_mismatch",
        "non_finite",
        "norm_exceeded",
        "too_stale",
        "future_version",
        "bad_num_examples",
        "duplicate_update",
        "not_current_round",
        "round_closed",
        "late",
    }


def test_fold_reads_wire_buffers_without_writing_or_keeping_them() -> None:
    agg = fedbuff(aggregation_goal=2)
    body = msgpack.packb(encode_tensors(good()), use_bin_type=True)
    tensors = decode_tensors(msgpack.unpackb(body))
    assert not any(t.flags.writeable for t in tensors)
    refs = [weakref.ref(t) for t in tensors]

    agg.fold("wire", tensors, 10, 0)
    del tensors

    assert all(r() is None for r in refs)
    assert agg.buffered == 1


def test_non_contiguous_and_unaligned_updates_fold_like_contiguous_ones() -> None:
    contiguous = good()
    transposed = [np.ascontiguousarray(t.T).T if t.ndim > 1 else t for t in contiguous]
    raw = bytearray(1) + b"".join(t.tobytes() for t in contiguous)
    unaligned, offset = [], 1
    for t in contiguous:
        unaligned.append(np.frombuffer(raw, np.float32, t.size, offset).reshape(t.shape))
        offset += t.nbytes
    assert not transposed[0].flags.c_contiguous
    assert not unaligned[0].flags.aligned
    results = []

    for tensors in (contiguous, transposed, unaligned):
        agg = fedbuff(aggregation_goal=1)
        agg.fold("u", tensors, 10, 0)
        results.append(b"".join(p.tobytes() for p in agg.params))

    assert results[0] == results[1] == results[2]


def test_model_tensors_must_be_floating_point() -> None:
    with pytest.raises(ConfigError, match="dtype int64"):
        FedBuffAggregator([np.zeros(3, np.int64)], fedbuff().config)
