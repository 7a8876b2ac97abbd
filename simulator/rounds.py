"""Sync mode: FedAvg-style rounds with over-selection and a deadline (Bonawitz et al.).

A round opens on the current version and selects ``cohort = ceil(goal x (1 +
over_selection))`` idle, eligible devices (at most the concurrency C). The first
``goal`` updates to arrive are folded into :class:`server.aggregation.SyncRoundAggregator`,
which steps and closes the round; at the deadline (``round_timeout_s``) a short round
steps with what it has (or is abandoned if empty). Either way every session still
running is cancelled and its work wasted (``over_selection`` or ``deadline``); the next
round opens at once. Devices that drop out never report; the round cannot tell them
from stragglers.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from server.aggregation import SyncRoundAggregator
from server.errors import UpdateRejected
from simulator.engine import ADMIT, ARRIVE, DEADLINE, RETRY_S, Simulation
from simulator.sessions import Session

__all__ = ["SyncSimulation"]


class SyncSimulation(Simulation):
    mode: ClassVar[str] = "sync"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.agg, SyncRoundAggregator)
        self.rounds: SyncRoundAggregator = self.agg
        self._round = 0
        self._deadline = 0.0
        self._open: dict[int, Session] = {}
        self._members: set[int] = set()
        self._cohort = self.rounds.cohort_target

    def _start(self) -> None:
        self.push(0.0, ADMIT, self._open_round)

    def _open_round(self, _: Any) -> None:
        state = self.rounds.start_round(self.now)
        self._round, self._deadline = state.round_id, state.deadline
        self._cohort = self.rounds.cohort_target  # fixed per config; computed exactly, once
        self._open, self._members = {}, set()
        self.push(state.deadline, DEADLINE, self._on_deadline, state.round_id)
        self._select(state.round_id)

    def _select(self, round_id: int) -> None:
        """Fill the cohort; retry later if too few devices are eligible right now."""
        rounds, misses = self.rounds, 0
        while round_id == self._round and len(self._members) < self._cohort:
            device = self.picker.pick(self.now, self.agg.version)
            if device is None or misses > self.picker.tries:
                if device is not None:
                    self.picker.release(device)
                self.push(self.now + RETRY_S, ADMIT, self._select, round_id)
                return
            if device in self._members:  # already trained in this round: not again
                self.picker.release(device)
                misses += 1
                continue
            if not rounds.select(str(device), self.now):
                self.picker.release(device)  # the round closed
                return
            self._members.add(device)
            s = self.begin(device)
            self._open[s.sid] = s
            if s.drop_at == math.inf and s.end <= self._deadline:
                self.expect(s)
                self.push(s.end, ARRIVE, self._arrive, s)

    def _arrive(self, s: Session) -> None:
        if self._open.get(s.sid) is not s:
            return  # cancelled when its round closed
        del self._open[s.sid]
        update = self.train(s)
        waste: str | None = None
        try:
            if update.flat is not None:
                result = self.rounds.fold_flat(
                    str(s.sid), update.flat, update.num_examples, s.version, self.now
                )
            else:
                result = self.rounds.fold(
                    str(s.sid), update.delta, update.num_examples, s.version, self.now
                )
        except UpdateRejected:
            waste, result = "rejected", None
        self.end(s, s.end, uploaded=True, waste=waste)
        if result is not None and result.step is not None:
            self._close("over_selection")

    def training_batch(self, s: Session) -> list[Session]:
        """Only the sessions that can still make this round's goal (earliest first)."""
        current = self.rounds.current_round
        room = self.rounds.goal - (current.received if current else 0)
        return super().training_batch(s)[: max(1, room)]

    def _on_deadline(self, round_id: int) -> None:
        if round_id != self._round or self.rounds.current_round is None:
            return
        self.rounds.close_if_expired(self.now)
        self._close("deadline")

    def _close(self, cause: str) -> None:
        """Cancel the round's unfinished sessions and open the next round now."""
        for s in self._open.values():
            if s.drop_at <= self.now:
                self.end(s, s.drop_at, uploaded=False, waste=s.drop_cause)
            else:
                self.end(s, self.now, uploaded=False, waste=cause)
        self._open = {}
        self._round = -1
        self.push(self.now, ADMIT, self._open_round)
