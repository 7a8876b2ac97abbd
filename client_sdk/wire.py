"""The asyncfl wire format: MessagePack bodies and tensors as ``{dtype, shape, data}``.

A tensor is a map ``{"dtype": "float32", "shape": [...], "data": <bin>}``. Decoding
is zero-copy (``np.frombuffer``) and checks that ``len(data) == prod(shape) * itemsize``
before anything looks at the bytes. The server and the SDK both use this module, so
there is exactly one implementation of the format.

What a decoded message may hold, whatever its source (:func:`check_tree`): maps with
string keys, lists, strings, bin, booleans, nil, floats and integers that fit a signed
64-bit column, nested at most :data:`MAX_DEPTH` deep. Anything else (bin map keys, ext
types, 2**64 - 1, a 1,000-deep list) is a :class:`WireFormatError` here, at the edge,
not a ``TypeError`` or ``RecursionError`` wherever the value is used later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeGuard

import msgpack
import numpy as np

from client_sdk.errors import WireFormatError

CONTENT_TYPE = "application/msgpack"

# dtypes a tensor may carry on the wire; anything else is refused when decoding.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in (
        "float32",
        "float64",
        "float16",
        "int64",
        "int32",
        "uint32",
        "int8",
        "uint8",
        "bool",
    )
}

MAX_RANK = 8
# One dimension is at most an int32 (as in ONNX shapes), and the bytes a shape spans,
# zero dimensions left out, must fit far inside numpy's intp: numpy checks that product
# even for an empty array, so [0, 2**62] would pass a size check and fail in reshape.
MAX_DIM = 2**31 - 1
MAX_SPAN_BYTES = 2**62
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_SCALARS = frozenset({str, bytes, float, bool, type(None)})


def pack(obj: Any) -> bytes:
    """Serialise ``obj`` to MessagePack (bin type for bytes, str for text)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Parse a MessagePack body; any malformation becomes a :class:`WireFormatError`."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"body is not valid msgpack: {exc}") from exc
    check_tree(obj)
    return obj


def check_tree(obj: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Refuse what no asyncfl message holds (see the module docstring), iteratively:
    a deep message costs a loop here, never the interpreter's recursion limit."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    scalars = _SCALARS
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind is dict:
            for key in node:  # a loop, not any(genexpr): this runs on every body
                if type(key) is not str:
                    raise WireFormatError("map keys must be strings")
            children = node.values()
        elif kind is list:
            children = node
        else:
            _check_scalar(node)
            continue
        if depth >= max_depth:
            raise WireFormatError(f"message is nested deeper than {max_depth} levels")
        for child in children:
            kind = type(child)
            if kind in scalars:
                continue
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is not int or not INT64_MIN <= child <= INT64_MAX:
                _check_scalar(child)


def _check_scalar(value: Any) -> None:
    kind = type(value)
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise WireFormatError(f"integer {value} does not fit in 64 signed bits")
    elif kind not in _SCALARS:
        raise WireFormatError(f"values of type {kind.__name__} are not part of the format")


def encode_tensor(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Encode an array as a wire tensor without copying when it is already contiguous."""
    arr = array if array.flags.c_contiguous else np.require(array, requirements="C")
    if arr.dtype.name not in WIRE_DTYPES:
        raise WireFormatError(f"dtype {arr.dtype.name} cannot be sent on the wire")
    data = arr.data.cast("B") if arr.size else b""
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}


def encode_tensors(arrays: Sequence[np.ndarray[Any, Any]]) -> list[dict[str, Any]]:
    return [encode_tensor(a) for a in arrays]


def decode_tensor(obj: Any, *, where: str = "tensor") -> np.ndarray[Any, Any]:
    """Decode a wire tensor (read-only view over ``data``), validating every field."""
    if not isinstance(obj, dict):
        raise WireFormatError(f"{where}: expected a map with dtype, shape and data")
    dtype_name, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
    dtype = WIRE_DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise WireFormatError(f"{where}: unsupported dtype {dtype_name!r}")
    if not _valid_shape(shape):
        raise WireFormatError(
            f"{where}: shape must be a list of at most {MAX_RANK} ints in 0..{MAX_DIM}"
        )
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"{where}: data must be msgpack bin")
    count = math.prod(shape)
    if not count and math.prod(d for d in shape if d) * dtype.itemsize > MAX_SPAN_BYTES:
        raise WireFormatError(f"{where}: shape {shape} of {dtype_name} is too large")
    expected = count * dtype.itemsize  # a non-empty shape spans exactly its bytes
    if expected > MAX_SPAN_BYTES:
        raise WireFormatError(f"{where}: shape {shape} of {dtype_name} is too large")
    if len(data) != expected:
        raise WireFormatError(
            f"{where}: data has {len(data)} bytes, shape {shape} of {dtype_name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _valid_shape(shape: Any) -> TypeGuard[list[int]]:
    """A list of at most MAX_RANK ints in 0..MAX_DIM (bools are not ints here)."""
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        return False
    for d in shape:  # noqa: SIM110 - a loop: all(genexpr) costs per tensor, per body
        if type(d) is not int or not 0 <= d <= MAX_DIM:
            return False
    return True


def decode_tensors(obj: Any, *, where: str = "tensors") -> list[np.ndarray[Any, Any]]:
    if not isinstance(obj, list):
        raise WireFormatError(f"{where}: expected a list of tensors")
    return [decode_tensor(t, where=f"{where}[{i}]") for i, t in enumerate(obj)]
