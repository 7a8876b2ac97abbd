"""Checking an update against the model before anything is folded.

Every refusal raises :class:`~server.errors.UpdateRejected` whose ``code`` is a
:class:`RejectReason` value (stable strings: clients and metrics branch on them). What a
code means to a client (its HTTP status) is the server's error table's business, not
the core's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np

from server.aggregation.blas import sdot
from server.errors import ConfigError, UpdateRejected

__all__ = [
    "F32",
    "MAX_NUM_EXAMPLES",
    "Flat",
    "ModelSpec",
    "RejectReason",
    "flatten_update",
    "reject",
    "validate_update",
]

Flat = np.ndarray[Any, np.dtype[np.float32]]
F32: Final = np.dtype(np.float32)

# More examples than any device holds: a larger count is a bug or an attack on weights.
MAX_NUM_EXAMPLES: Final = 1_000_000_000


class RejectReason(StrEnum):
    """Why an update was refused (the ``code`` of the :class:`UpdateRejected`)."""

    TENSOR_COUNT = "tensor_count"
    SHAPE_MISMATCH = "shape_mismatch"
    DTYPE_MISMATCH = "dtype_mismatch"
    NON_FINITE = "non_finite"
    NORM_EXCEEDED = "norm_exceeded"
    BAD_NUM_EXAMPLES = "bad_num_examples"
    DUPLICATE_UPDATE = "duplicate_update"
    TOO_STALE = "too_stale"
    FUTURE_VERSION = "future_version"
    NOT_CURRENT_ROUND = "not_current_round"
    ROUND_CLOSED = "round_closed"
    LATE = "late"


def reject(reason: RejectReason, message: str, **details: Any) -> UpdateRejected:
    """The error for ``reason`` (raise it)."""
    return UpdateRejected(message, code=reason.value, details=details or None)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Tensor shapes of a model; every tensor is float32 and lives at ``offsets[i]`` of
    the flat parameter vector."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]
    total_size: int

    @classmethod
    def of(cls, shapes: Sequence[Sequence[int]]) -> ModelSpec:
        sizes = tuple(math.prod(s) for s in shapes)
        offsets = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        return cls(
            shapes=tuple(tuple(int(d) for d in s) for s in shapes),
            dtypes=("float32",) * len(sizes),
            sizes=sizes,
            offsets=offsets,
            total_size=sum(sizes),
        )

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray[Any, Any]]) -> ModelSpec:
        """The spec of ``arrays``; each must be floating point (they are kept as float32)."""
        for i, a in enumerate(arrays):
            dtype = np.asarray(a).dtype
            if not np.issubdtype(dtype, np.floating):
                raise ConfigError(f"model tensor {i} has dtype {dtype}; only floats can train")
        return cls.of([np.shape(a) for a in arrays])

    @property
    def num_tensors(self) -> int:
        return len(self.shapes)


def flatten_update(
    spec: ModelSpec,
    tensors: Sequence[np.ndarray[Any, Any]],
    *,
    max_norm: float | None,
) -> tuple[list[Flat], float]:
    """Check ``tensors`` against ``spec``; return 1-D float32 views of them and their norm.

    Views, not copies, for C-contiguous input (read-only wire buffers included);
    anything else is copied once. The norm pass (``sdot``) doubles as the NaN/Inf check.
    This is the hot path: keep it to attribute checks and one BLAS call per tensor. The
    norm is always computed here, never taken from a caller: clipping and the norm bound
    rest on it.
    """
    given: object = tensors  # a bare ndarray is a sequence of rows: refuse it explicitly
    if isinstance(given, np.ndarray) or len(tensors) != len(spec.shapes):
        got = "one array" if isinstance(given, np.ndarray) else f"{len(tensors)} tensors"
        raise reject(
            RejectReason.TENSOR_COUNT, f"update has {got}, the model has {len(spec.shapes)}"
        )
    flats: list[Flat] = []
    sq = 0.0
    shapes = spec.shapes
    # Indexing, not zip(..., strict=...): the keyword call costs ~0.5 us per fold.
    for i, t in enumerate(tensors):
        shape = shapes[i]
        if not isinstance(t, np.ndarray) or t.shape != shape or t.dtype != F32:
            raise _mismatch(i, t, shape)
        flat: Flat = t.ravel()  # a view when C-contiguous, else one copy
        if flat.size:
            sq += sdot(flat, flat)  # f2py copies unaligned input itself: correct, rare
        flats.append(flat)
    if not math.isfinite(sq):
        if not all(np.isfinite(f).all() for f in flats):
            raise reject(RejectReason.NON_FINITE, "update holds NaN or Inf")
        sq = sum(_wide_sq_norm(f) for f in flats)  # finite, but the float32 sum overflowed
    norm = math.sqrt(sq)
    if max_norm is not None and norm > max_norm:
        raise reject(
            RejectReason.NORM_EXCEEDED,
            f"update L2 norm {norm:.6g} exceeds the bound {max_norm:.6g}",
            norm=norm,
            max_norm=max_norm,
        )
    return flats, norm


def _mismatch(i: int, t: object, shape: tuple[int, ...]) -> UpdateRejected:
    if not isinstance(t, np.ndarray):
        return reject(
            RejectReason.DTYPE_MISMATCH, f"tensor {i} is a {type(t).__name__}, not an array"
        )
    if t.shape != shape:
        return reject(
            RejectReason.SHAPE_MISMATCH,
            f"tensor {i} has shape {list(t.shape)}, the model has {list(shape)}",
            tensor=i,
        )
    return reject(
        RejectReason.DTYPE_MISMATCH,
        f"tensor {i} has dtype {t.dtype.str}, the model has float32 ({F32.str})",
        tensor=i,
    )


def _wide_sq_norm(flat: Flat) -> float:
    wide = flat.astype(np.float64)
    return float(np.dot(wide, wide))


def validate_update(
    spec: ModelSpec, tensors: Sequence[np.ndarray[Any, Any]], *, max_norm: float | None = None
) -> float:
    """Check an update's tensor count, shapes, dtypes, finiteness and norm; return the norm.

    Raises :class:`~server.errors.UpdateRejected` with a :class:`RejectReason` code.
    """
    _, norm = flatten_update(spec, tensors, max_norm=max_norm)
    return norm
