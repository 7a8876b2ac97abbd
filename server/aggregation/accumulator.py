"""The running weighted sum of a buffer's updates, preallocated once per model.

Precision: the sum is kept in float32. A buffer adds K terms, so float32 summation
error is bounded by about ``K * 2**-24`` of the sum of the terms' magnitudes (6e-7 for
K = 10, 6e-5 for K = 1000), far below the noise of the client updates themselves and
of the same order as rounding the result into float32 parameters. A float64 sum would
need a float64 copy of every float32 update (a temporary and twice the memory
traffic) or a pass with no BLAS kernel, for accuracy no client could observe. The
order of the terms changes the float32 result only within that bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.aggregation.blas import add_scaled, saxpy
from server.aggregation.validation import Flat, ModelSpec

__all__ = ["Accumulator"]


class Accumulator:
    """``total = sum(alpha_i * update_i)`` over one flat float32 vector, plus the ids and
    weights that went in. Folding allocates nothing. ``total`` is meaningful only while
    the buffer holds at least one update."""

    def __init__(self, spec: ModelSpec) -> None:
        self.total: Flat = np.zeros(spec.total_size, dtype=np.float32)
        # One writable 1-D view per model tensor, so a fold is one BLAS call per tensor.
        self._views = [self.total[o : o + n] for o, n in zip(spec.offsets, spec.sizes, strict=True)]
        self.weight_sum = 0.0
        self.ids: list[str] = []
        self.id_set: set[str] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, update_id: str, flats: Sequence[Flat], alpha: float, weight: float) -> None:
        """Add ``alpha * flats`` (already validated against the spec) in one pass each.

        The first update of a buffer is written (``total = alpha * x``) rather than added,
        so emptying the buffer needs no zeroing pass (same values as adding to zeros).
        ``flats`` match the spec (validated); the loops index rather than zip(strict=)
        because the keyword call costs ~0.5 us per fold.
        """
        views = self._views
        if self.ids:
            # saxpy called directly, positionally: the wrapper and keywords cost ~1 us
            for i, flat in enumerate(flats):
                view = views[i]
                if flat.size and saxpy(flat, view, flat.size, alpha) is not view:
                    add_scaled(view, flat, alpha)  # f2py copied: redo it the checked way
        else:
            scale = np.float32(alpha)
            for i, flat in enumerate(flats):
                np.multiply(flat, scale, out=views[i])
        self.weight_sum += weight
        self.ids.append(update_id)
        self.id_set.add(update_id)

    def add_total(self, ids: Sequence[str], total: Flat, alpha: float, weight_sum: float) -> None:
        """Add ``alpha * total``, a sum of several updates over the whole flat vector (a
        replica's partial), in one pass."""
        if self.ids:
            add_scaled(self.total, total, alpha)
        else:
            np.multiply(total, np.float32(alpha), out=self.total)
        self.weight_sum += weight_sum
        self.ids.extend(ids)
        self.id_set.update(ids)

    def reset(self) -> None:
        """Empty the buffer; ``total`` keeps stale values until the next first add."""
        self.weight_sum = 0.0
        self.ids = []
        self.id_set = set()

    def load(self, total: Flat | None, weight_sum: float, ids: Sequence[str]) -> None:
        """Restore a partial buffer (``total`` may be None only when ``ids`` is empty)."""
        if ids and total is None:
            raise ValueError("a non-empty buffer needs its total")
        if total is not None:
            self.total[...] = total
        self.weight_sum = weight_sum
        self.ids = list(ids)
        self.id_set = set(ids)
