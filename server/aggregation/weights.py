"""Example weights: how much an update counts for the number of examples it trained on.

``n`` is first capped (``min(n, cap)``) so one device with a huge local dataset cannot
dominate a buffer. Then: ``equal`` 1, ``linear`` n, ``sqrt`` sqrt(n), ``log`` log10(1+n).
With ``linear`` weights, ``normalization = "weights"`` keeps the pseudo-gradient on the
scale of one update; ``"goal"`` would multiply it by the mean example count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["example_weight", "make_example_weight"]


def example_weight(num_examples: int, kind: str = "equal", cap: int | None = None) -> float:
    """Weight of an update trained on ``num_examples`` (>= 1) examples."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    n = num_examples if cap is None else min(num_examples, cap)
    if kind == "equal":
        return 1.0
    if kind == "linear":
        return float(n)
    if kind == "sqrt":
        return math.sqrt(n)
    if kind == "log":
        return math.log10(1 + n)
    raise ValueError(f"unknown example weighting {kind!r}")


def make_example_weight(kind: str = "equal", cap: int | None = None) -> Callable[[int], float]:
    """:func:`example_weight` with ``kind`` and ``cap`` bound (``equal`` skips all work)."""
    example_weight(1, kind, cap)  # refuse an unknown kind now, not at the first fold
    if kind == "equal":
        return _one
    return lambda n: example_weight(n, kind, cap)


def _one(num_examples: int) -> float:
    return 1.0
