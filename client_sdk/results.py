"""What one :meth:`Client.run_once` did, as a small closed set of typed results.

Match on the type::

    match await client.run_once():
        case Trained(version=v):       ...  # trained and the server acknowledged the update
        case NoSlot(retry_after=s):    ...  # the task is full (or paused): come back later
        case NotEligible(reasons=r):   ...  # the device may not train now; nothing uploaded
        case Rejected(reason=code):    ...  # the server refused the update (or the session)
        case Evaluated():              ...  # an evaluation-only session was reported
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Trained:
    """Trained locally and the update was acknowledged (``duplicate``: a retry found it
    already accepted, so it counts once)."""

    version: int
    num_examples: int
    steps: int
    loss: float
    train_s: float
    stopped: str  # completed | max_steps | time_budget (the budget or the session deadline)
    update_id: str
    staleness: int | None = None
    duplicate: bool = False
    resumed: bool = False  # the session (or its update) survived an app restart
    evaluation: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Evaluated:
    """An evaluation-only session: metrics of ``version`` on local data were reported."""

    version: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NotEligible:
    """The device may not train now; ``during_training``: it stopped mid-training and
    uploaded nothing."""

    reasons: tuple[str, ...]
    during_training: bool = False


@dataclass(frozen=True)
class NoSlot:
    """The server turned the device away (task full or paused); try after ``retry_after``."""

    retry_after: float
    reason: str = "no_slot"


@dataclass(frozen=True)
class Rejected:
    """The update or the session was refused: ``reason`` is the server's stable code
    (``too_stale``, ``session_expired``, ...) or ``deadline_too_close`` when too little of
    the session was left to train; ``status`` is 0 when the client decided."""

    reason: str
    status: int = 0
    message: str = ""


RoundResult = Trained | Evaluated | NotEligible | NoSlot | Rejected
