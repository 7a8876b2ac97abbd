"""What one simulated run produces, as plain values with a JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.ledger import LedgerView

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """One mode on one configuration, up to the target accuracy (or the run's limits).

    ``until_target`` is the ledger when the target was first measured (None if never);
    ``tier_accuracy`` is measured then (or at the end); ``trained`` counts updates
    really computed with the ONNX graphs. ``status``: ``reached`` the target,
    ``diverged`` (non-finite training loss), ``stalled`` (no progress for
    ``patience_s``), ``budget`` (a DP run committed the last version its budget
    allows) or stopped at a ``limit`` of the run.
    """

    label: str
    mode: str
    status: str
    concurrency: int
    hyper: dict[str, Any]
    target: float
    time_to_target: float | None
    curve: list[tuple[float, float]]
    until_target: LedgerView | None
    final: LedgerView
    tier_accuracy: dict[str, float]
    final_accuracy: float
    trained: int
    versions: int
    max_active: int
    virtual_s: float
    wall_s: float
    stats: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0  # this process's CPU seconds for the run (shared machines: wall lies)

    @property
    def reached(self) -> bool:
        return self.time_to_target is not None

    @property
    def ledger(self) -> LedgerView:
        """The books until the target, or the final ones when it was never reached."""
        return self.until_target or self.final

    @property
    def tier_accuracy_gap(self) -> float:
        values = list(self.tier_accuracy.values())
        return max(values) - min(values) if values else 0.0

    def to_dict(self, *, curve: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "mode": self.mode,
            "status": self.status,
            "concurrency": self.concurrency,
            "hyper": self.hyper,
            "target": self.target,
            "time_to_target": self.time_to_target,
            "until_target": self.until_target.to_dict() if self.until_target else None,
            "final": self.final.to_dict(),
            "tier_accuracy": self.tier_accuracy,
            "tier_accuracy_gap": self.tier_accuracy_gap,
            "final_accuracy": self.final_accuracy,
            "trained": self.trained,
            "versions": self.versions,
            "max_active": self.max_active,
            "virtual_s": self.virtual_s,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "stats": self.stats,
        }
        if curve:
            out["curve"] = [[round(t, 3), round(a, 5)] for t, a in self.curve]
        return out
