"""The asyncfl wire format: MessagePack bodies and tensors as ``{dtype, shape, data}``.

A tensor is a map ``{"dtype": "float32", "shape": [...], "data": <bin>}``. Decoding
is zero-copy (``np.frombuffer``) and checks that ``len(data) == prod(shape) * itemsize``
before anything looks at the bytes. The server and the SDK both use this module, so
there is exactly one implementation of the format.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from client_sdk.errors import WireFormatError

CONTENT_TYPE = "application/msgpack"

# dtypes a tensor may carry on the wire; anything else is refused when decoding.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name)
    for name in ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")
}

MAX_RANK = 8


def pack(obj: Any) -> bytes:
    """Serialise ``obj`` to MessagePack (bin type for bytes, str for text)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Parse a MessagePack body; any malformation becomes a :class:`WireFormatError`."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"body is not valid msgpack: {exc}") from exc


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
    if not isinstance(dtype_name, str) or dtype_name not in WIRE_DTYPES:
        raise WireFormatError(f"{where}: unsupported dtype {dtype_name!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise WireFormatError(f"{where}: shape must be a list of at most {MAX_RANK} ints >= 0")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireFormatError(f"{where}: data must be msgpack bin")
    dtype = WIRE_DTYPES[dtype_name]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireFormatError(
            f"{where}: data has {len(data)} bytes, shape {shape} of {dtype_name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_tensors(obj: Any, *, where: str = "tensors") -> list[np.ndarray[Any, Any]]:
    if not isinstance(obj, list):
        raise WireFormatError(f"{where}: expected a list of tensors")
    return [decode_tensor(t, where=f"{where}[{i}]") for i, t in enumerate(obj)]
