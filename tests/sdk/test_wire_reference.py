"""The hot-path decoders against their plain reference versions: same value, same error.

:func:`client_sdk.wire.check_tree` and :func:`client_sdk.wire.decode_tensor` run on
every upload, so they are written as loops without generators; the references below
are the straightforward versions they replaced (as of 63403b5). Whatever the input,
both must accept it alike and refuse it with the same message.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from client_sdk.errors import WireFormatError
from client_sdk.wire import (
    _SCALARS,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    MAX_DIM,
    MAX_RANK,
    MAX_SPAN_BYTES,
    WIRE_DTYPES,
    check_tree,
    decode_tensor,
)
from tests.strategies import trees as trees_of

EXAMPLES = settings(max_examples=500, deadline=None)


def reference_check_tree(obj: Any, *, max_depth: int = MAX_DEPTH) -> None:
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is dict:
            if any(type(key) is not str for key in node):
                raise WireFormatError("map keys must be strings")
            children = node.values()
        elif kind is list:
            children = node
        else:
            _reference_scalar(node)
            continue
        if depth >= max_depth:
            raise WireFormatError(f"message is nested deeper than {max_depth} levels")
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind not in _SCALARS:
                _reference_scalar(child)


def _reference_scalar(value: Any) -> None:
    kind = type(value)
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise WireFormatError(f"integer {value} does not fit in 64 signed bits")
    elif kind not in _SCALARS:
        raise WireFormatError(f"values of type {kind.__name__} are not part of the format")


def reference_decode_tensor(obj: Any, *, where: str = "tensor") -> np.ndarray[Any, Any]:
    if not isinstance(obj, dict):
        raise WireFormatError(f"{where}: expected a map with dtype, shape and data")
    dtype_name, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    if not isinstance(dtype_name, str) or dtype_name not in WIRE_DTYPES:
        raise WireFormatError(f"{where}: unsupported dtype {dtype_name!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)
    ):
        raise WireFormatError(
            f"{where}: shape must be a list of at most {MAX_RANK} ints in 0..{MAX_DIM}"
        )
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"{where}: data must be msgpack bin")
    dtype = WIRE_DTYPES[dtype_name]
    span = math.prod(d for d in shape if d) * dtype.itemsize
    if span > MAX_SPAN_BYTES:
        raise WireFormatError(f"{where}: shape {shape} of {dtype_name} is too large")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireFormatError(
            f"{where}: data has {len(data)} bytes, shape {shape} of {dtype_name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    try:
        return call(*args, **kwargs), None
    except WireFormatError as exc:
        return None, str(exc)


# Scalars of every kind a decoded (or hand-built) value may hold, out-of-format ones too.
odd_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1, 1.5, True, None]),
    st.builds(object),
    st.builds(bytearray, st.binary(max_size=3)),
)
deep_trees = trees_of(max_int=2**70, max_leaves=40)


@EXAMPLES
@given(st.one_of(deep_trees, odd_scalars, st.lists(odd_scalars, max_size=4)))
def test_check_tree_agrees_with_its_reference(tree: Any) -> None:
    assert _outcome(check_tree, tree) == _outcome(reference_check_tree, tree)


@EXAMPLES
@given(st.integers(0, MAX_DEPTH + 3), st.sampled_from(["list", "dict"]), odd_scalars)
def test_check_tree_agrees_on_depth(depth: int, kind: str, leaf: Any) -> None:
    tree: Any = leaf
    for _ in range(depth):
        tree = [tree] if kind == "list" else {"k": tree}
    assert _outcome(check_tree, tree) == _outcome(reference_check_tree, tree)


dims = st.one_of(
    st.integers(0, 6),
    st.sampled_from([0, 2**31 - 1, 2**31, 2**40, 2**61, 2**62, 2**63 - 1, -1, True, 2.0]),
)
shapes = st.one_of(
    st.lists(dims, max_size=MAX_RANK + 2),
    st.tuples(st.integers(0, 4)).map(list),
    st.sampled_from([None, "3", (2, 2), 3]),
)
dtypes = st.one_of(st.sampled_from([*WIRE_DTYPES, "complex64", "object"]), st.none(), st.just(4))


@st.composite
def tensor_maps(draw: st.DrawFn) -> Any:
    shape = draw(shapes)
    dtype = draw(dtypes)
    itemsize = WIRE_DTYPES[dtype].itemsize if isinstance(dtype, str) and dtype in WIRE_DTYPES else 1
    if isinstance(shape, list) and all(type(d) is int and 0 <= d <= 64 for d in shape):
        fit = math.prod(shape) * itemsize  # a right length most of the time
        size = draw(st.sampled_from([fit, fit, max(0, fit - 1), fit + 1]))
    else:
        size = draw(st.integers(0, 16))
    kind = draw(st.sampled_from([bytes, bytearray, memoryview, str]))
    data: Any = "x" * size if kind is str else kind(bytes(size))
    obj = {"dtype": dtype, "shape": shape, "data": data}
    for key in draw(st.sets(st.sampled_from(["dtype", "shape", "data"]), max_size=1)):
        del obj[key]
    return (
        draw(st.one_of(st.just(obj), st.just([obj]), st.just(None)))
        if draw(st.booleans()) and not draw(st.booleans())
        else obj
    )


@EXAMPLES
@given(tensor_maps())
def test_decode_tensor_agrees_with_its_reference(obj: Any) -> None:
    got, error = _outcome(decode_tensor, obj, where="t")
    want, want_error = _outcome(reference_decode_tensor, obj, where="t")
    assert error == want_error
    if want is not None:
        assert got is not None
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
