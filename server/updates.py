"""The update upload payload: parsed strictly, validated cheaply, before anything else.

Fields (msgpack map)::

    session       str    the signed session token from check-in
    base_version  int    the model version the device trained from
    num_examples  int    examples the device trained on (1 .. MAX_EXAMPLES)
    encoding      str    "float32" (plain deltas); "masked_fixed_point" is reserved for
                         secure aggregation and refused until that ships
    tensors       list   the delta (new - base) per parameter, wire tensors
    metrics       map    optional numeric client metrics (loss, steps, train_s, ...)

Unknown fields are refused: a device sends only what the protocol declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.errors import WireFormatError
from client_sdk.wire import decode_tensors, unpack
from server.errors import BadRequest

ENCODINGS = frozenset({"float32"})
RESERVED_ENCODINGS = frozenset({"masked_fixed_point"})
MAX_EXAMPLES = 10_000_000
MAX_METRICS = 32
FIELDS = frozenset({"session", "base_version", "num_examples", "encoding", "tensors", "metrics"})


@dataclass(frozen=True)
class UpdatePayload:
    session: str
    base_version: int
    num_examples: int
    encoding: str
    tensors: list[np.ndarray[Any, Any]]
    metrics: dict[str, float]


def parse_update(body: bytes | bytearray | memoryview) -> UpdatePayload:
    """Decode and check an upload body; raise :class:`BadRequest` with a stable code."""
    try:
        obj = unpack(body)
    except WireFormatError as exc:
        raise BadRequest(str(exc), code="malformed_body") from exc
    if not isinstance(obj, dict):
        raise BadRequest("update body must be a msgpack map", code="malformed_body")
    unknown = set(obj) - FIELDS
    if unknown:
        raise BadRequest(f"unknown fields: {sorted(unknown)}", code="unknown_field")
    for name in ("session", "base_version", "num_examples", "tensors"):
        if name not in obj:
            raise BadRequest(f"missing field {name!r}", code="missing_field")
    session = obj["session"]
    if not isinstance(session, str) or not session:
        raise BadRequest("session must be a non-empty string", code="bad_field")
    base_version = _int(obj["base_version"], "base_version")
    if base_version < 0:
        raise BadRequest("base_version must be >= 0", code="bad_field")
    num_examples = _int(obj["num_examples"], "num_examples")
    if not 1 <= num_examples <= MAX_EXAMPLES:
        raise BadRequest(
            f"num_examples must be in 1..{MAX_EXAMPLES}, got {num_examples}",
            code="bad_num_examples",
        )
    encoding = obj.get("encoding", "float32")
    if encoding in RESERVED_ENCODINGS:
        raise BadRequest(f"encoding {encoding!r} is not enabled", code="unsupported_encoding")
    if encoding not in ENCODINGS:
        raise BadRequest(f"unknown encoding {encoding!r}", code="unsupported_encoding")
    try:
        tensors = decode_tensors(obj["tensors"])
    except WireFormatError as exc:
        raise BadRequest(str(exc), code="bad_tensor") from exc
    return UpdatePayload(
        session=session,
        base_version=base_version,
        num_examples=num_examples,
        encoding=encoding,
        tensors=tensors,
        metrics=_metrics(obj.get("metrics", {})),
    )


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer", code="bad_field")
    return value


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_METRICS:
        raise BadRequest(
            f"metrics must be a map of at most {MAX_METRICS} numbers", code="bad_field"
        )
    out: dict[str, float] = {}
    for key, v in value.items():
        if (
            not isinstance(key, str)
            or len(key) > 64
            or isinstance(v, bool)
            or not isinstance(v, int | float)
            or not math.isfinite(v)
        ):
            raise BadRequest(f"metric {key!r} must be a finite number", code="bad_field")
        out[key] = float(v)
    return out
