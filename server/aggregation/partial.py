"""Pre-aggregation: sums of updates built on an API replica, merged by the task's leader.

A replica folds the updates it accepts into a :class:`PartialBuilder`: each update is
checked, example-weighted and clipped exactly as a fold would (:class:`~server.
aggregation.contribution.Weigher`), then added to the sum of its *group*: the updates
trained from the same base version (and, in sync mode, for the same round). Staleness is
not applied here: the replica does not know at which version the leader will merge the
partial, so the leader weights each group by its own staleness rule when it merges
(``AggregatorBase.merge``). FedBuff's weights are therefore exact: an update's weight is
``s(version_at_merge - base) * example_weight * clip_scale``, the same as if it had been
folded alone at that moment.

A sealed :class:`Partial` holds one float32 sum per group, the sum of its example
weights, and the ids in fold order. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.aggregation.blas import add_scaled
from server.aggregation.config import AggregationConfig
from server.aggregation.contribution import Contribution, Weigher, masked_flat
from server.aggregation.masked import MaskedConfig
from server.aggregation.validation import Flat, ModelSpec, RejectReason, reject

__all__ = ["Partial", "PartialBuilder", "PartialGroup"]


@dataclass(frozen=True, slots=True)
class PartialGroup:
    """Updates of one base version (and sync round): ``total = sum(w_i * scale_i * x_i)``
    over the flat model vector, ``weight_sum = sum(w_i)`` over their example weights."""

    base_version: int
    round_id: int
    total: np.ndarray[Any, Any]  # float32; uint32 (masked, sums modulo 2**32)
    weight_sum: float
    ids: tuple[str, ...]
    example_weights: tuple[float, ...]
    # each update's device, where the leader knows it (masked buffers count them)
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.example_weights) or not self.ids:
            raise ValueError("a group needs one example weight per id, and at least one id")
        if self.sources and len(self.sources) != len(self.ids):
            raise ValueError("a group's sources, when given, name one device per id")


@dataclass(frozen=True, slots=True)
class Partial:
    groups: tuple[PartialGroup, ...]

    @property
    def count(self) -> int:
        return sum(len(g.ids) for g in self.groups)

    @property
    def ids(self) -> list[str]:
        return [uid for g in self.groups for uid in g.ids]


@dataclass
class _Open:
    total: np.ndarray[Any, Any]
    views: list[np.ndarray[Any, Any]]
    weight_sum: float = 0.0
    ids: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


class PartialBuilder:
    """Folds accepted updates into per-group sums until :meth:`seal`."""

    def __init__(
        self, spec: ModelSpec, config: AggregationConfig, *, masked: MaskedConfig | None = None
    ) -> None:
        self._spec = spec
        self._weigher = Weigher(spec, config)
        self._masked = masked
        self._groups: dict[tuple[int, int], _Open] = {}
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, update_id: object) -> bool:
        return update_id in self._ids

    def add(
        self,
        update_id: str,
        tensors: Sequence[np.ndarray[Any, Any]],
        num_examples: int,
        base_version: int,
        *,
        round_id: int = 0,
    ) -> Contribution:
        """Check and add one update; raises UpdateRejected having changed nothing."""
        if update_id in self._ids:
            raise reject(RejectReason.DUPLICATE_UPDATE, f"update {update_id!r} is already here")
        if isinstance(base_version, bool) or not isinstance(base_version, int) or base_version < 0:
            raise reject(RejectReason.TOO_STALE, f"base version {base_version!r} is not valid")
        key = (base_version, round_id)
        if self._masked is not None:
            return self._add_masked(update_id, tensors, num_examples, key)
        contribution = self._weigher.weigh(tensors, num_examples)
        group = self._groups.get(key)
        alpha = contribution.example_weight * contribution.scale
        if group is None:
            total = np.empty(self._spec.total_size, dtype=np.float32)
            group = self._groups[key] = _Open(total, _views(self._spec, total))
            for view, flat in zip(group.views, contribution.flats, strict=True):
                np.multiply(flat, np.float32(alpha), out=view)
        else:
            for view, flat in zip(group.views, contribution.flats, strict=True):
                add_scaled(view, flat, alpha)
        group.weight_sum += contribution.example_weight
        group.ids.append(update_id)
        group.weights.append(contribution.example_weight)
        self._ids.add(update_id)
        return contribution

    def _add_masked(
        self,
        update_id: str,
        tensors: Sequence[np.ndarray[Any, Any]],
        num_examples: int,
        key: tuple[int, int],
    ) -> Contribution:
        """A masked update: its integer example weight times the masked vector, summed
        modulo 2**32; the leader multiplies by the integer staleness weight."""
        assert self._masked is not None
        flat = masked_flat(tensors, self._spec.total_size)
        e_int = self._masked.example_int(self._weigher.example(num_examples))
        group = self._groups.get(key)
        if group is None:
            total = np.empty(self._spec.total_size, dtype=np.uint32)
            group = self._groups[key] = _Open(total, [total])
            np.multiply(flat, np.uint32(e_int), out=total)
        else:
            np.add(group.total, flat * np.uint32(e_int), out=group.total)
        group.weight_sum += e_int
        group.ids.append(update_id)
        group.weights.append(float(e_int))
        self._ids.add(update_id)
        return Contribution([flat], 0.0, float(e_int), 1.0)

    def seal(self) -> Partial:
        """The groups summed so far, oldest base first; the builder starts empty again."""
        groups = tuple(
            PartialGroup(base, rnd, g.total, g.weight_sum, tuple(g.ids), tuple(g.weights))
            for (base, rnd), g in sorted(self._groups.items())
        )
        self._groups = {}
        self._ids = set()
        return Partial(groups)


def _views(spec: ModelSpec, total: Flat) -> list[Flat]:
    return [total[o : o + n] for o, n in zip(spec.offsets, spec.sizes, strict=True)]
