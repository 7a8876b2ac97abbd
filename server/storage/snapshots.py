"""Aggregator states as bytes: a versioned msgpack map, arrays in the wire format.

:meth:`server.aggregation.AggregatorBase.state` gives plain values and float32 arrays;
:func:`dump` turns them into bytes (arrays as wire tensors, floats as float64, so a
restored aggregator continues bit-identically) and :func:`load` back. The same
encoding serves the state stored with a version and the checkpoints of an open buffer.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from client_sdk.errors import WireFormatError
from client_sdk.wire import decode_tensor, encode_tensor, pack, unpack
from server.aggregation import SnapshotError

__all__ = ["FORMAT", "decode", "dump", "encode", "load", "with_params"]

FORMAT: Final = "asyncfl.aggregator/2"
_TENSOR_KEYS: Final = frozenset({"dtype", "shape", "data"})


def dump(state: dict[str, Any]) -> bytes:
    return pack({"format": FORMAT, **_encode(state)})


def load(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The state packed by :func:`dump` (SnapshotError when it is not one)."""
    try:
        state = unpack(data)
    except WireFormatError as exc:
        raise SnapshotError(f"state is not valid msgpack: {exc}") from exc
    if not isinstance(state, dict) or state.pop("format", None) != FORMAT:
        raise SnapshotError(f"not an aggregator state in format {FORMAT}")
    decoded = _decode(state, "state")
    assert isinstance(decoded, dict)
    return decoded


def with_params(state: dict[str, Any], params: list[np.ndarray[Any, Any]]) -> dict[str, Any]:
    """A loaded state stored without its parameters (``state(params=False)``: a version's
    state beside its params blob) with ``params``, the version's, put back."""
    if "params" not in state:
        state["params"] = np.concatenate([np.asarray(p, np.float32).ravel() for p in params])
    return state


def encode(value: Any) -> Any:
    """A state (or part of one) as msgpack-ready values: arrays as wire tensors."""
    return _encode(value)


def decode(value: Any) -> Any:
    """The inverse of :func:`encode` (SnapshotError on a bad tensor)."""
    return _decode(value, "state")


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return encode_tensor(value)
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if set(value) == _TENSOR_KEYS and isinstance(value["data"], bytes):
            try:
                return decode_tensor(value, where=where).copy()
            except WireFormatError as exc:
                raise SnapshotError(f"{where}: {exc}") from exc
        return {k: _decode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    return value
