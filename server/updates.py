"""The update upload payload: parsed strictly, validated cheaply, before anything else.

Fields (msgpack map)::

    session       str    the signed session token from check-in
    base_version  int    the model version the device trained from
    num_examples  int    examples the device trained on (1 .. MAX_EXAMPLES)
    encoding      str    "float32" (plain deltas, the default) or "masked-fixed32" (secure
                         aggregation: one flat uint32 tensor, the masked fixed-point delta)
    tensors       list   the delta (new - base) per parameter, wire tensors
    secagg        map    with "masked-fixed32" only: the sealed mask seed
                         {ephemeral_key, nonce, ciphertext} (client_sdk.secagg)
    metrics       map    optional numeric client metrics (loss, steps, train_s, ...)

Unknown fields are refused: a device sends only what the protocol declares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.errors import WireFormatError
from client_sdk.secagg import ENCODING, SealedSeed, SecaggError
from client_sdk.wire import decode_tensors, unpack
from server.errors import BadRequest

PLAIN, MASKED = "float32", ENCODING
ENCODINGS = frozenset({PLAIN, MASKED})
MAX_EXAMPLES = 10_000_000
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in the database
MAX_METRICS = 32
FIELDS = frozenset(
    {"session", "base_version", "num_examples", "encoding", "tensors", "metrics", "secagg"}
)


@dataclass(frozen=True)
class UpdatePayload:
    session: str
    base_version: int
    num_examples: int
    encoding: str
    tensors: list[np.ndarray[Any, Any]]
    metrics: dict[str, float]
    sealed: SealedSeed | None = None  # the mask seed of a masked update

    @property
    def masked(self) -> bool:
        return self.encoding == MASKED


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
    if not 0 <= base_version <= MAX_VERSION:
        raise BadRequest(f"base_version must be in 0..{MAX_VERSION}", code="bad_field")
    num_examples = _int(obj["num_examples"], "num_examples")
    if not 1 <= num_examples <= MAX_EXAMPLES:
        raise BadRequest(
            f"num_examples must be in 1..{MAX_EXAMPLES}, got {num_examples}",
            code="bad_num_examples",
        )
    encoding = obj.get("encoding", PLAIN)
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise BadRequest(
            f"encoding must be one of {sorted(ENCODINGS)}", code="unsupported_encoding"
        )
    try:
        tensors = decode_tensors(obj["tensors"])
    except WireFormatError as exc:
        raise BadRequest(str(exc), code="bad_tensor") from exc
    sealed = None
    if encoding == MASKED:
        try:
            sealed = SealedSeed.from_wire(obj.get("secagg"))
        except SecaggError as exc:
            raise BadRequest(f"secagg: {exc}", code="bad_field") from exc
    elif "secagg" in obj:
        raise BadRequest("secagg comes only with a masked encoding", code="unknown_field")
    return UpdatePayload(
        session=session,
        base_version=base_version,
        num_examples=num_examples,
        encoding=encoding,
        tensors=tensors,
        metrics=_metrics(obj.get("metrics", {})),
        sealed=sealed,
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
