"""Snapshot encoding: a versioned msgpack map, tensors in the wire format.

The aggregators build a plain dict of their state; this module turns it into bytes and
back, so there is one serialisation (``client_sdk.wire``) for updates and snapshots.
Floats go through msgpack as float64 and arrays byte for byte, so a restored
aggregator continues bit-identically. A top-level value may come already packed
(:class:`PackedArray`: the dedup window, see :mod:`server.aggregation.recent`); the
bytes are the same as packing it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np

from client_sdk.errors import WireFormatError
from client_sdk.wire import decode_tensor, encode_tensor, unpack
from server.aggregation.validation import Flat
from server.errors import AsyncflError

__all__ = [
    "FORMAT",
    "PackedArray",
    "SnapshotError",
    "decode_array",
    "dump",
    "encode_array",
    "load",
]

FORMAT: Final = "asyncfl.aggregator/1"


class SnapshotError(AsyncflError):
    """A snapshot that is corrupt, from another format version or of another kind."""

    code = "invalid_snapshot"
    status = 500


def encode_array(array: Flat | None) -> dict[str, Any] | None:
    return None if array is None else encode_tensor(array)


def decode_array(obj: Any, *, where: str) -> Flat | None:
    """A writable float32 copy of an encoded array (None stays None)."""
    if obj is None:
        return None
    try:
        array = decode_tensor(obj, where=where)
    except WireFormatError as exc:
        raise SnapshotError(f"snapshot {where}: {exc}") from exc
    if array.dtype != np.float32:
        raise SnapshotError(f"snapshot {where}: expected float32, got {array.dtype}")
    return array.copy()


@dataclass(frozen=True, slots=True)
class PackedArray:
    """A msgpack array encoded ahead of time: ``count`` items whose packed bytes,
    concatenated, are ``items``."""

    count: int
    items: bytes


def dump(kind: str, state: dict[str, Any]) -> bytes:
    """Pack ``state`` as one map, exactly as ``pack`` would (PackedArray values spliced)."""
    fields = {"format": FORMAT, "kind": kind, **state}
    packer = msgpack.Packer(use_bin_type=True)  # the options of client_sdk.wire.pack
    parts = [packer.pack_map_header(len(fields))]
    for key, value in fields.items():
        parts.append(packer.pack(key))
        if isinstance(value, PackedArray):
            parts += (packer.pack_array_header(value.count), value.items)
        else:
            parts.append(packer.pack(value))
    return b"".join(parts)


def load(data: bytes, *, kind: str | None) -> dict[str, Any]:
    """The state dict of a snapshot of ``kind`` ("fedbuff", "sync"; None: either)."""
    try:
        state = unpack(data)
    except WireFormatError as exc:
        raise SnapshotError(f"snapshot is not valid msgpack: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SnapshotError(f"not an aggregator snapshot in format {FORMAT}")
    if kind is not None and state.get("kind") != kind:
        raise SnapshotError(f"snapshot is of a {state.get('kind')!r} aggregator, not {kind!r}")
    return state
