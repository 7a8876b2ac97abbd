"""Folding masked updates: integer weights, sums modulo 2**32, releases to unmask.

With secure aggregation a device uploads ``masked = q + mask (mod 2**32)``, its clipped
delta ``q`` in fixed point (``scale``) plus a mask only the mask service can expand.
The aggregator never sees ``q``. It weights each masked vector by an *integer*
``w = s * e`` (``s``: the staleness weight in ``staleness_levels`` steps, ``e``: the
example weight in ``example_levels`` steps, 1 when weights are equal) and sums modulo
2**32, which is linear: ``sum(w_i * masked_i) = sum(w_i * q_i) + sum(w_i * mask_i)``.

When a buffer fills it is *sealed* into a :class:`Release`: the ids and integer weights
the mask service is asked to sum masks for, and the masked total. Once the service
answers ``sum(w_i * mask_i)``, :meth:`Release.unmask` gives ``sum(w_i * q_i)`` as
floats, and the aggregator steps. Sealing advances the aggregator's (logical) version
at once, so staleness keeps counting versions exactly as in the clear; the parameters
follow when the release completes, in order. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MaskedAccumulator", "MaskedConfig", "Release"]

U32 = np.dtype(np.uint32)
MaskedFlat = np.ndarray[Any, np.dtype[np.uint32]]


@dataclass(frozen=True, slots=True)
class MaskedConfig:
    """How masked updates are weighted and decoded (agreed with the devices)."""

    scale: float  # fixed point: q = round(x * scale)
    staleness_levels: int = 64  # a staleness weight s(t) <= 1 becomes round(s * this) >= 1
    example_levels: int = 1  # example weights in this many steps up to example_max
    example_max: float = 1.0
    # the mask service releases a sum only of updates from at least this many distinct
    # sources (devices); a buffer is sealed once it holds them (and K updates)
    distinct_sources: int = 1
    max_updates: int = 0  # the most updates one sum may hold (the scale allows); 0: K

    @property
    def max_weight(self) -> int:
        return self.staleness_levels * self.example_levels

    def staleness_int(self, weight: float) -> int:
        return max(1, round(weight * self.staleness_levels))

    def example_int(self, weight: float) -> int:
        if self.example_levels == 1:
            return 1
        return max(
            1, min(self.example_levels, round(weight / self.example_max * self.example_levels))
        )

    def to_float(self, weight: int) -> float:
        """An integer weight as the float weight it stands for."""
        return weight * self.example_max / self.max_weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "staleness_levels": self.staleness_levels,
            "example_levels": self.example_levels,
            "example_max": self.example_max,
            "distinct_sources": self.distinct_sources,
            "max_updates": self.max_updates,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskedConfig:
        return cls(
            float(data["scale"]),
            int(data["staleness_levels"]),
            int(data["example_levels"]),
            float(data["example_max"]),
            int(data.get("distinct_sources", 1)),
            int(data.get("max_updates", 0)),
        )


class MaskedAccumulator:
    """``total = sum(w_i * masked_i) mod 2**32`` over one flat uint32 vector.

    Kept as one running sum per integer weight (``sum_w = sum of the masked vectors of
    weight w``): a fold is then one ``np.add`` pass, as cheap as a plain fold's saxpy,
    instead of a multiply and an add. ``total`` combines them (``sum(w * sum_w)``, mod
    2**32: the same integers) when it is read. Staleness weights take few distinct values
    in one buffer; past :data:`MAX_SUMS` of them the sums are combined into one.
    """

    MAX_SUMS = 8

    def __init__(self, size: int) -> None:
        self._size = size
        self._sums: dict[int, MaskedFlat] = {}
        self._total: MaskedFlat | None = None  # sum(w * sum_w), until the next add
        self.ids: list[str] = []
        self.id_set: set[str] = set()
        self.weights: list[int] = []
        self.sources: list[str | None] = []  # None: not known, counted as distinct
        self._devices: Counter[str] = Counter()
        self._unknown = 0
        self.weight_sum = 0.0  # float weights, for normalization by weights

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def distinct(self) -> int:
        """Distinct sources in the buffer (each unknown source counts as one)."""
        return len(self._devices) + self._unknown

    @property
    def total(self) -> MaskedFlat:
        if self._total is None:
            total = np.zeros(self._size, dtype=np.uint32)
            scratch = np.empty(self._size, dtype=np.uint32)
            for weight, part in self._sums.items():
                np.multiply(part, np.uint32(weight), out=scratch)
                np.add(total, scratch, out=total)
            self._total = total
        return self._total

    def _into(self, weight: int, vector: MaskedFlat) -> None:
        """``sum_weight += vector`` (one pass); bounded memory: combine past MAX_SUMS."""
        self._total = None
        part = self._sums.get(weight)
        if part is not None:
            np.add(part, vector, out=part)
            return
        if len(self._sums) >= self.MAX_SUMS:
            combined = self.total  # sum(w * sum_w): one sum of weight 1
            self._sums = {1: combined}
            self._total = None
            if weight == 1:
                np.add(combined, vector, out=combined)
                return
        self._sums[weight] = vector.astype(np.uint32, copy=True)

    def add(
        self,
        update_id: str,
        masked: MaskedFlat,
        weight: int,
        weight_float: float,
        source: str | None = None,
    ) -> None:
        """Add ``weight * masked`` modulo 2**32 (uint32 arithmetic wraps)."""
        self._into(weight, masked)
        self._append([update_id], [weight], weight_float, [source])

    def add_total(
        self,
        ids: Sequence[str],
        total: MaskedFlat,
        factor: int,
        weights: Sequence[int],
        weight_float: float,
        sources: Sequence[str | None] = (),
    ) -> None:
        """Add ``factor * total`` (a replica's sum, example-weighted); each id's weight
        becomes ``factor * its example weight``."""
        self._into(factor, total)
        known: list[str | None] = list(sources) if len(sources) == len(ids) else [None] * len(ids)
        self._append(list(ids), [factor * w for w in weights], weight_float, known)

    def _append(
        self,
        ids: list[str],
        weights: list[int],
        weight_float: float,
        sources: list[str | None],
    ) -> None:
        self.ids.extend(ids)
        self.id_set.update(ids)
        self.weights.extend(weights)
        self.sources.extend(sources)
        for source in sources:
            if source is None:
                self._unknown += 1
            else:
                self._devices[source] += 1
        self.weight_sum += weight_float

    def seal(self, version: int, task_key: str) -> Release:
        """The buffer as a release for ``version``; the accumulator starts empty."""
        release = Release(
            version=version,
            ids=tuple(self.ids),
            weights=tuple(self.weights),
            total=self.total,
            weight_sum=self.weight_sum,
            release_id=release_id(task_key, self.ids, self.weights),
        )
        self.reset()
        return release

    def reset(self) -> None:
        self.ids, self.id_set, self.weights, self.weight_sum = [], set(), [], 0.0
        self.sources, self._devices, self._unknown = [], Counter(), 0
        self._sums, self._total = {}, None

    def load(
        self,
        total: MaskedFlat | None,
        ids: Sequence[str],
        weights: Sequence[int],
        weight_sum: float,
        sources: Sequence[str | None] | None = None,
    ) -> None:
        if ids and total is None:
            raise ValueError("a non-empty buffer needs its total")
        self.reset()
        if total is not None and ids:
            self._sums = {1: np.array(total, dtype=np.uint32)}
        given = list(sources) if sources is not None else []
        self._append(
            [str(i) for i in ids],
            [int(w) for w in weights],
            float(weight_sum),
            given if len(given) == len(ids) else [None] * len(ids),
        )


@dataclass(frozen=True, slots=True)
class Release:
    """A sealed buffer waiting for the mask service's ``sum(weights_i * mask_i)``."""

    version: int  # the version its step makes
    ids: tuple[str, ...]
    weights: tuple[int, ...]
    total: MaskedFlat
    weight_sum: float
    release_id: str

    def unmask(self, mask_sum: MaskedFlat, config: MaskedConfig) -> np.ndarray[Any, Any]:
        """``sum(w_i * x_i)`` in float64, the integer weights as their float weights."""
        clear = (self.total - mask_sum).view(np.int32).astype(np.float64)
        return clear * (config.to_float(1) / config.scale)

    def to_state(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ids": list(self.ids),
            "weights": list(self.weights),
            "total": self.total.view(np.float32),  # states carry float32 arrays: same bits
            "weight_sum": self.weight_sum,
            "release_id": self.release_id,
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Release:
        total = np.asarray(data["total"], dtype=np.float32).view(np.uint32).copy()
        return cls(
            int(data["version"]),
            tuple(str(i) for i in data["ids"]),
            tuple(int(w) for w in data["weights"]),
            total,
            float(data["weight_sum"]),
            str(data["release_id"]),
        )


def release_id(task_key: str, ids: Sequence[str], weights: Sequence[int]) -> str:
    """Names exactly this set of (id, weight): the same buffer asks for the same release."""
    digest = hashlib.sha256(task_key.encode())
    for uid, w in sorted(zip(ids, weights, strict=True)):
        digest.update(f"|{uid}:{w}".encode())
    return digest.hexdigest()[:32]
