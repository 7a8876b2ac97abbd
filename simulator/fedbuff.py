"""Async mode: FedBuff with concurrency C (Nguyen et al., 2022; Papaya).

The server keeps C sessions open. A free slot admits a random idle, eligible device,
which downloads the current version, trains and uploads; the update is folded into
:class:`server.aggregation.FedBuffAggregator` (staleness = versions committed since
its base), which steps every K updates. A device that drops out holds its slot until
its lease (``session_timeout_s``) expires, as a server only learns of it then; an
upload after the lease is refused (``timeout``); a too-stale one is refused by the core.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from server.aggregation import FedBuffAggregator, RejectReason
from server.errors import UpdateRejected
from simulator.engine import ADMIT, ARRIVE, DEADLINE, RETRY_S, Simulation
from simulator.sessions import Session

__all__ = ["AsyncSimulation"]


class AsyncSimulation(Simulation):
    mode: ClassVar[str] = "async"

    def _start(self) -> None:
        for _ in range(self.cfg.concurrency):
            self.push(0.0, ADMIT, self._admit)

    def _admit(self, _: Any) -> None:
        device = self.picker.pick(self.now, self.agg.version)
        if device is None:
            self.push(self.now + RETRY_S, ADMIT, self._admit)
            return
        s = self.begin(device)
        lease_end = s.start + self.training.session_timeout_s
        if s.drop_at < math.inf or s.end > lease_end:
            self.push(lease_end, DEADLINE, self._expire, s)
        else:
            self.expect(s)
            self.push(s.end, ARRIVE, self._arrive, s)

    def _arrive(self, s: Session) -> None:
        update = self.train(s)
        agg = self.agg
        assert isinstance(agg, FedBuffAggregator)
        waste: str | None = None
        lands_in = agg.version + 1  # the version this update becomes part of
        try:
            if update.flat is not None:
                agg.fold_flat(str(s.sid), update.flat, update.num_examples, s.version)
            else:
                agg.fold(str(s.sid), update.delta, update.num_examples, s.version)
        except UpdateRejected as exc:
            waste = "staleness" if exc.code == RejectReason.TOO_STALE else "rejected"
        else:
            if self.accepted is not None:
                self.accepted.append((s.device, s.version, lands_in))
        self.end(s, s.end, uploaded=True, waste=waste)
        self.committed()
        self.push(self.now, ADMIT, self._admit)

    def _expire(self, s: Session) -> None:
        if s.drop_at < math.inf:
            self.end(s, s.drop_at, uploaded=False, waste=s.drop_cause)
        else:
            self.end(s, self.now, uploaded=False, waste="timeout")
        self.push(self.now, ADMIT, self._admit)
