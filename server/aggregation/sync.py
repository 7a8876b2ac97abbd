"""Synchronous rounds, for comparison with FedBuff and for users who need them.

A round admits ``cohort_target = ceil(goal * (1 + over_selection))`` devices, folds the
first ``goal`` updates trained on the round's version and steps. At the deadline
(:meth:`close_if_expired`) a short round steps if it holds at least
``max(1, ceil(min_round_fraction * goal))`` updates, normalising by the number it
holds, and is abandoned otherwise. Updates after the step or the deadline are refused
(``round_closed`` / ``late``). The caller owns the clock and starts every round.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from server.aggregation.config import AggregationConfig
from server.aggregation.core import AggregatorBase
from server.aggregation.masked import MaskedConfig
from server.aggregation.partial import Partial
from server.aggregation.results import FoldResult, MergeResult, RoundState, StepResult
from server.aggregation.validation import RejectReason, reject
from server.errors import Conflict, UpdateRejected

__all__ = ["SyncRoundAggregator"]


class SyncRoundAggregator(AggregatorBase):
    """Round-based aggregator for a config with ``mode = "sync"``."""

    kind: ClassVar[str] = "sync"
    mode: ClassVar[str] = "sync"

    def __init__(
        self,
        params: Sequence[np.ndarray[Any, Any]],
        config: AggregationConfig,
        *,
        version: int = 0,
        masked: MaskedConfig | None = None,
        noise_seed: int | None = None,
    ) -> None:
        super().__init__(params, config, version=version, masked=masked, noise_seed=noise_seed)
        self._round_id = 0
        self._open = False
        self._deadline = 0.0
        self._selected: set[str] = set()

    @property
    def goal(self) -> int:
        return self._config.aggregation_goal

    @functools.cached_property
    def cohort_target(self) -> int:
        """``ceil(goal * (1 + over_selection))`` in exact decimal arithmetic, reading
        ``over_selection`` as the decimal it was written as (``repr`` gives the shortest
        one that round-trips): in binary floats 100 * 1.1 is 110.00000000000001, one
        device too many. Computed once (the config is fixed): ``select`` reads it for
        every device."""
        over = Fraction(repr(self._config.over_selection))
        return math.ceil(self.goal * (1 + over))

    @property
    def current_round(self) -> RoundState | None:
        """The open round, or None between rounds."""
        return self._round_state() if self._open else None

    def _round_state(self) -> RoundState:
        return RoundState(
            round_id=self._round_id,
            version=self._version,
            goal=self.goal,
            cohort_target=self.cohort_target,
            selected=len(self._selected),
            received=len(self._active),
            deadline=self._deadline,
        )

    def start_round(self, now: float) -> RoundState:
        """Open the next round on the current version, closing at ``now + round_timeout_s``."""
        if self._open:
            raise Conflict(f"round {self._round_id} is still open", code="round_open")
        self._round_id += 1
        self._open = True
        self._deadline = now + self._config.round_timeout_s
        self._selected = set()
        return self._round_state()

    def select(self, device_id: str, now: float) -> bool:
        """Admit ``device_id`` to the open round's cohort (idempotent); False when full/closed."""
        if not self._open or now > self._deadline:
            return False
        if device_id in self._selected:
            return True
        if len(self._selected) >= self.cohort_target:
            return False
        self._selected.add(device_id)
        return True

    @property
    def round_id(self) -> int:
        """The id of the open round, or of the last one when none is open."""
        return self._round_id

    def fold(
        self,
        update_id: str,
        tensors: Sequence[np.ndarray[Any, Any]],
        num_examples: int,
        base_version: int,
        now: float | None = None,
        source: str | None = None,
    ) -> FoldResult:
        """Fold an update into the open round; steps (and closes it) at ``goal`` updates.

        ``now`` (the update's arrival) is required. Raises UpdateRejected (code: a
        RejectReason) and changes nothing but the rejection counter.
        """
        if now is None:
            raise TypeError("a sync round needs the update's arrival time (now)")
        try:
            self._check_duplicate(update_id)
            self._check_round(base_version, now)
            weight, norm, clipped = self._fold_checked(update_id, tensors, num_examples, 0, source)
        except UpdateRejected as exc:
            self._count_rejection(exc)
            raise
        return FoldResult(0, weight, norm, clipped, self._step_if_full())

    def fold_flat(
        self,
        update_id: str,
        flat: np.ndarray[Any, Any],
        num_examples: int,
        base_version: int,
        now: float | None = None,
    ) -> FoldResult:
        """:meth:`fold` of an update given as one flat float32 vector of the model's
        size (see :meth:`FedBuffAggregator.fold_flat`): the same checks, weights, result
        and accumulated values, one norm pass and one ``saxpy`` for the whole update."""
        if now is None:
            raise TypeError("a sync round needs the update's arrival time (now)")
        try:
            self._check_duplicate(update_id)
            self._check_round(base_version, now)
        except UpdateRejected as exc:
            self._count_rejection(exc)
            raise
        plain = self._fold_flat_plain(update_id, flat, num_examples, 0)
        if plain is None:
            return self.fold(update_id, self.split_flat(flat), num_examples, base_version, now)
        return FoldResult(0, plain[0], plain[1], False, self._step_if_full())

    def merge(self, partial: Partial, now: float | None = None) -> MergeResult:
        """Merge a replica's partial: groups of the open round are taken (a partial past
        ``goal`` makes a round of more than ``goal`` updates); groups of another round,
        or arriving after the round closed, are refused and reported as dropped."""
        applied: list[tuple[str, int, float]] = []
        dropped: list[str] = []
        for group in partial.groups:
            current = (
                self._open
                and group.round_id == self._round_id
                and group.base_version == self._version
                and (now is None or now <= self._deadline)
            )
            if current:
                applied += self._merge_group(group, 0)
            else:
                dropped += group.ids
        step = self._step_if_full() if applied else None
        return MergeResult(applied, dropped, RejectReason.ROUND_CLOSED.value, step)

    def _step_if_full(self) -> StepResult | None:
        if len(self._active) < self.goal:
            return None
        if self.at_version_limit:  # a privacy budget: the round cannot make a version
            self._open = False
            self._abandon()
            return None
        step = self._step()
        self._open = False
        return step

    def close_if_expired(self, now: float) -> StepResult | None:
        """At/after the deadline, step (enough updates) or abandon the round; it closes.

        Returns the step, or None when the round was abandoned, is not due, or (masked)
        was sealed for a release: :attr:`pending_releases` grew then.
        """
        if not self._open or now < self._deadline:
            return None
        self._open = False
        need = max(1, math.ceil(self._config.min_round_fraction * self.goal))
        if len(self._active) >= need and not self.at_version_limit:
            return self._step()
        self._abandon()
        return None

    def _abandon(self) -> None:
        self._rounds_abandoned += 1
        self._updates_dropped += len(self._active)
        self._recent.extend(self._active.ids)  # dropped ids stay refused as duplicates
        self._active.reset()

    def renumber_after(self, round_id: int) -> list[str]:
        """Continue round ids after ``round_id`` (one replicas may have handed out): an
        older open round is abandoned. Returns the ids it held (dropped, never applied)."""
        if round_id <= self._round_id:
            return []
        dropped = list(self._active.ids) if self._open else []
        if self._open:
            self._rounds_abandoned += 1
            self._updates_dropped += len(dropped)
            self._consume(dropped)
        self._open = False
        self._round_id = round_id
        return dropped

    def _check_round(self, base_version: int, now: float) -> None:
        if not self._open or len(self._active) >= self.goal:
            raise reject(RejectReason.ROUND_CLOSED, "no round is open for updates")
        if now > self._deadline:
            raise reject(
                RejectReason.LATE,
                f"round {self._round_id} closed at {self._deadline:.3f}, update came at {now:.3f}",
            )
        if base_version != self._version:
            raise reject(
                RejectReason.NOT_CURRENT_ROUND,
                f"update trained on version {base_version}, the round is on {self._version}",
            )

    def _buffer_state(self, with_buffer: bool) -> dict[str, Any]:
        return {
            **super()._buffer_state(with_buffer),
            "round": {
                "id": self._round_id,
                "open": self._open,
                "deadline": self._deadline,
                "selected": sorted(self._selected),
            },
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        rnd = state["round"]
        self._round_id = int(rnd["id"])
        self._open = bool(rnd["open"])
        self._deadline = float(rnd["deadline"])
        self._selected = set(rnd["selected"])
