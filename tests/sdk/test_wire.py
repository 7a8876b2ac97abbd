"""The wire decoder: any input is a value that follows the format or a WireFormatError."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.errors import WireFormatError
from client_sdk.wire import (
    MAX_DEPTH,
    WIRE_DTYPES,
    check_tree,
    decode_tensor,
    encode_tensor,
    pack,
    unpack,
)
from tests.strategies import trees as trees_of

trees = trees_of(st.one_of(st.text(max_size=4), st.binary(max_size=4)), max_leaves=30)
dims = st.one_of(
    st.integers(0, 5),
    st.sampled_from([0, 2**31 - 1, 2**31, 2**40, 2**61, 2**62, 2**63 - 1, 2**64 - 1]),
)


def _packable(tree: Any) -> bytes | None:
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_unpack_to_a_checked_value_or_a_wire_error(data: bytes) -> None:
    try:
        value = unpack(data)
    except WireFormatError:
        return
    check_tree(value)  # what unpack returns always passes the tree rules


@settings(max_examples=300, deadline=None)
@given(trees)
def test_a_tree_unpacks_to_itself_or_is_refused_for_a_stated_rule(tree: Any) -> None:
    data = _packable(tree)
    if data is None:
        return
    try:
        value, error = unpack(data), ""
    except WireFormatError as exc:
        value, error = None, str(exc)
    if error:
        assert any(r in error for r in ("keys must be strings", "64 signed bits", "nested deeper"))
    else:
        assert pack(value) == data


@pytest.mark.parametrize("depth", [1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1000, 100_000])
@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k"])  # [x] and {"k": x}
def test_nesting_is_bounded_without_recursion(depth: int, opener: bytes) -> None:
    data = opener * depth + b"\xc0"
    if depth <= MAX_DEPTH:
        value = unpack(data)
        for _ in range(depth):
            value = value[0] if isinstance(value, list) else value["k"]
        assert value is None
    else:
        with pytest.raises(WireFormatError):
            unpack(data)


def test_check_tree_bounds_a_python_tree_deeper_than_the_recursion_limit() -> None:
    tree: Any = None
    for _ in range(50_000):
        tree = [tree]
    with pytest.raises(WireFormatError, match="nested deeper"):
        check_tree(tree)


@pytest.mark.parametrize(
    "value",
    [{b"a": 1, "b": 2}, 2**63, 2**64 - 1, msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0)],
)
def test_what_no_message_holds_is_refused(value: Any) -> None:
    with pytest.raises(WireFormatError):
        unpack(msgpack.packb({"v": value}, use_bin_type=True))


@pytest.mark.parametrize("shape", [[0, 2**62], [2**31, 2**31, 0], [0, 2**31 - 1, 2**31 - 1]])
def test_empty_tensors_whose_shape_numpy_refuses_are_wire_errors(shape: list[int]) -> None:
    with pytest.raises(WireFormatError):
        decode_tensor({"dtype": "float32", "shape": shape, "data": b""})


@settings(max_examples=500, deadline=None)
@given(
    dtype=st.one_of(st.sampled_from(sorted(WIRE_DTYPES)), st.text(max_size=6), st.integers()),
    shape=st.one_of(st.lists(dims, max_size=9), trees),
    fill=st.booleans(),
    junk=st.binary(max_size=16),
)
def test_any_tensor_map_decodes_to_its_shape_or_is_a_wire_error(
    dtype: Any, shape: Any, fill: bool, junk: bytes
) -> None:
    data = junk
    dims_ok = isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
    if fill and dims_ok and isinstance(dtype, str) and dtype in WIRE_DTYPES:
        size = math.prod(shape) * WIRE_DTYPES[dtype].itemsize
        data = bytes(size) if size <= 4096 else junk
    try:
        array = decode_tensor({"dtype": dtype, "shape": shape, "data": data})
    except WireFormatError:
        return
    assert list(array.shape) == shape and array.dtype.name == dtype
    assert array.nbytes == len(data) and not array.flags.writeable


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(WIRE_DTYPES)),
    st.lists(st.integers(0, 4), max_size=4),
)
def test_encoded_tensors_decode_back(dtype: str, shape: list[int]) -> None:
    array = np.zeros(shape, dtype=WIRE_DTYPES[dtype])
    assert np.array_equal(decode_tensor(unpack(pack(encode_tensor(array)))), array)
