"""What one update contributes before staleness: checked, normed, example-weighted, clipped.

The aggregators (which fold an update whole) and :class:`~server.aggregation.partial.
PartialBuilder` (which sums updates on an API replica before the leader weights their
staleness) share this step, so an update's example weight and clip scale are the same
wherever it is folded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from server.aggregation.config import AggregationConfig
from server.aggregation.privacy import clip_scale
from server.aggregation.validation import (
    MAX_NUM_EXAMPLES,
    Flat,
    ModelSpec,
    RejectReason,
    flatten_update,
    reject,
)
from server.aggregation.weights import make_example_weight

__all__ = ["Contribution", "Weigher", "checked_num_examples", "masked_flat"]


class Contribution(NamedTuple):
    """An update's flat views, its L2 norm (before clipping), its example weight, and the
    clip scale that brings it within ``clip_norm`` (1.0 when it was within)."""

    flats: list[Flat]
    norm: float
    example_weight: float
    scale: float

    @property
    def clipped(self) -> bool:
        return self.scale < 1.0


class Weigher:
    """Validates an update against the model and weighs it by the task's config."""

    def __init__(self, spec: ModelSpec, config: AggregationConfig) -> None:
        self.spec = spec
        self._max_norm = config.max_update_norm
        self._clip = config.clip_norm
        self._weigh_examples = config.example_weighting.kind != "equal"
        self._example_weight = make_example_weight(
            config.example_weighting.kind, config.example_weighting.cap
        )

    def example(self, num_examples: int) -> float:
        """The example weight alone (for masked updates, which carry no norm to check)."""
        if type(num_examples) is not int or not 1 <= num_examples <= MAX_NUM_EXAMPLES:
            num_examples = checked_num_examples(num_examples)
        return self._example_weight(num_examples) if self._weigh_examples else 1.0

    def weigh(self, tensors: Sequence[np.ndarray[Any, Any]], num_examples: int) -> Contribution:
        """Check count, shapes, dtypes, finiteness and the norm bound (UpdateRejected,
        nothing changed); the norm is computed here, never trusted from a caller."""
        if type(num_examples) is not int or not 1 <= num_examples <= MAX_NUM_EXAMPLES:
            num_examples = checked_num_examples(num_examples)
        flats, norm = flatten_update(self.spec, tensors, max_norm=self._max_norm)
        weight = self._example_weight(num_examples) if self._weigh_examples else 1.0
        scale = 1.0 if self._clip is None else clip_scale(norm, self._clip)[0]
        return Contribution(flats, norm, weight, scale)


def checked_num_examples(num_examples: object) -> int:
    if (
        isinstance(num_examples, int | np.integer)
        and not isinstance(num_examples, bool)
        and 1 <= num_examples <= MAX_NUM_EXAMPLES
    ):
        return int(num_examples)
    raise reject(
        RejectReason.BAD_NUM_EXAMPLES,
        f"num_examples must be an integer in [1, {MAX_NUM_EXAMPLES}], got {num_examples!r}",
    )


def masked_flat(tensors: Sequence[np.ndarray[Any, Any]], size: int) -> np.ndarray[Any, Any]:
    """A masked update's one flat uint32 vector of the model's size (UpdateRejected)."""
    given: object = tensors
    if isinstance(given, np.ndarray) or len(tensors) != 1:
        raise reject(RejectReason.TENSOR_COUNT, "a masked update is one flat uint32 tensor")
    (flat,) = tensors
    if not isinstance(flat, np.ndarray) or flat.dtype != np.uint32:
        raise reject(RejectReason.DTYPE_MISMATCH, "a masked update is uint32")
    if flat.shape != (size,):
        raise reject(
            RejectReason.SHAPE_MISMATCH,
            f"a masked update has shape {list(flat.shape)}, the model needs [{size}]",
        )
    return flat
