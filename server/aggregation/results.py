"""Plain values the aggregators return: nothing here holds a reference to their state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["AggregatorStats", "FoldResult", "MergeResult", "RoundState", "StepResult"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """A server-optimizer step: the new model ``version`` and what it consumed.

    ``pseudo_grad_norm`` is the L2 norm of what the optimizer received (after
    normalisation and noise).
    """

    version: int
    num_updates: int
    update_ids: tuple[str, ...]
    pseudo_grad_norm: float


class FoldResult(NamedTuple):
    """An accepted update. ``weight`` is staleness weight x example weight (before the
    division by K or by the sum of weights); ``norm`` is the update's L2 norm before
    clipping; ``step`` is set when this fold filled the buffer.

    A NamedTuple, not a dataclass, because one is built per fold: half the cost.
    """

    staleness: int
    weight: float
    norm: float
    clipped: bool
    step: StepResult | None = None


@dataclass(frozen=True, slots=True)
class MergeResult:
    """A merged partial: ``(update_id, staleness, weight)`` of each update taken, the ids
    it refused (a sync round that closed under them) with the reason, and the step when
    the merge filled the buffer."""

    applied: list[tuple[str, int, float]]
    dropped: list[str] = field(default_factory=list)
    drop_reason: str = ""
    step: StepResult | None = None


@dataclass(frozen=True, slots=True)
class RoundState:
    """A sync round as it stands: ``selected`` devices admitted, ``received`` updates folded."""

    round_id: int
    version: int
    goal: int
    cohort_target: int
    selected: int
    received: int
    deadline: float


@dataclass(frozen=True, slots=True)
class AggregatorStats:
    """Counters since the aggregator was created (they survive snapshot/restore).

    ``rounds_abandoned`` and ``updates_dropped`` (folded into a round that was then
    abandoned) stay 0 in async mode.
    """

    folded: int = 0
    steps: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    staleness_sum: int = 0
    staleness_count: int = 0
    clipped: int = 0
    rounds_abandoned: int = 0
    updates_dropped: int = 0

    @property
    def staleness_mean(self) -> float:
        return self.staleness_sum / self.staleness_count if self.staleness_count else 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
