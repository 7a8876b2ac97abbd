"""One device session in virtual time: download, local training, upload, or a dropout.

The planner fixes a session's whole timeline when it starts, so the engine can schedule
its arrival; the update itself is computed only when (and if) it arrives, from the base
parameters the session holds. Local training mirrors the SDK's ``TrainPlan``: batches
of ``batch_size`` over the shuffled shard for ``epochs`` epochs, and a ``time_budget_s``
checked before each step (so the step running when the budget expires still finishes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator import rand
from simulator.config import TrainingConfig
from simulator.fleet import Fleet

__all__ = [
    "Session",
    "SessionPlanner",
    "examples_after",
    "session_factor",
    "session_hash",
    "steps_within_budget",
    "training_seed",
]

Array = np.ndarray[Any, Any]

# rand key tags, so the draws of one session are independent of each other
_SESSION_SPEED, _DROP, _TRAIN_SEED = 1, 2, 4


@dataclass(slots=True, eq=False)
class Session:
    """A device's trip; ``drop_at`` is inf unless it drops (``drop_cause`` says why)."""

    sid: int
    device: int
    tier: int
    trip: int
    start: float
    version: int
    params: list[Array] | None
    key: int  # session_hash(seed, device, trip): every draw of the session derives from it
    steps: int
    examples: int
    down_s: float
    train_s: float
    up_s: float
    bytes_down: int
    bytes_up: int
    drop_at: float = math.inf
    drop_cause: str = ""
    booked: bool = False  # its work is in the ledger (at the drop, or when it ended)

    @property
    def end(self) -> float:
        """When the upload finishes (if the session gets that far)."""
        return self.start + self.down_s + self.train_s + self.up_s

    @property
    def seed(self) -> int:
        """The seed local training shuffles with (drawn only for sessions that train)."""
        return training_seed(self.key)

    def compute_s(self, until: float) -> float:
        """Seconds of local training done by virtual time ``until``."""
        begin = self.start + self.down_s
        return max(0.0, min(until, begin + self.train_s) - begin)

    def radio_s(self, until: float) -> float:
        """Seconds spent downloading or uploading by ``until``."""
        down = max(0.0, min(until, self.start + self.down_s) - self.start)
        up_begin = self.start + self.down_s + self.train_s
        return down + max(0.0, min(until, up_begin + self.up_s) - up_begin)


def session_factor(sigma: float, z: float) -> float:
    """A session's speed factor from a standard normal ``z``: log-normal with mean 1
    (:class:`~simulator.config.SessionSpeedConfig`)."""
    return math.exp(sigma * z - 0.5 * sigma * sigma)


def session_hash(seed: int, device: int, trip: int) -> int:
    """The hash every random draw of ``device``'s ``trip``-th session derives from."""
    return rand.key_seed(seed, device, trip)


def training_seed(h: int) -> int:
    """The ``seed`` a session passes to local training (31 bits, like a device's)."""
    return rand.key_seed(h, _TRAIN_SEED) >> 33


def examples_after(steps: int, n: int, batch_size: int) -> int:
    """Examples processed by the first ``steps`` steps over a shard of ``n`` examples."""
    per_epoch = -(-n // batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + min(rest * batch_size, n)


def steps_within_budget(
    n: int, batch_size: int, epochs: int, seconds_per_example: float, budget_s: float
) -> int:
    """Steps the SDK runs: every step that *starts* before ``budget_s`` (at least one)."""
    total = epochs * -(-n // batch_size)
    if examples_after(total - 1, n, batch_size) * seconds_per_example < budget_s:
        return total
    lo, hi = 0, total - 1  # step lo starts in time, step hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if examples_after(mid, n, batch_size) * seconds_per_example < budget_s:
            lo = mid
        else:
            hi = mid
    return lo + 1


class SessionPlanner:
    """Builds sessions for a fleet: timings, dropouts and the training seed."""

    def __init__(
        self,
        fleet: Fleet,
        shard_sizes: Array,
        training: TrainingConfig,
        *,
        params_bytes: int,
        graph_bytes: int,
        seed: int,
    ) -> None:
        self.fleet = fleet
        self.sizes = shard_sizes
        self.training = training
        self.params_bytes = params_bytes
        self.graph_bytes = graph_bytes
        self.seed = seed
        self._next_sid = 0
        self._session_sigma = fleet.cfg.session_speed.sigma
        # Per-device counters as Python lists: reading one is ~15x cheaper than reading a
        # numpy array (measured).
        n = fleet.size
        self._trips = [0] * n
        self._has_graphs = bytearray(n)
        self._prefix: list[int | None] = [None] * n  # rand.key_seed(seed, device), lazily
        self._n = np.asarray(shard_sizes, dtype=np.int64).tolist()
        self._dropout = [t.dropout for t in fleet.tiers]
        self._plans: dict[int, tuple[int, int, int]] = {}
        self._rtt = fleet.cfg.rtt_s
        self._always = fleet.always_available

    def _budget(self, n: int) -> tuple[int, int, int]:
        """``(total steps, examples, examples before the last step)`` of a full plan over
        a shard of ``n`` (cached per size: the fast path of :func:`steps_within_budget`)."""
        got = self._plans.get(n)
        if got is None:
            tr = self.training
            total = tr.epochs * -(-n // tr.batch_size)
            got = self._plans[n] = (
                total,
                examples_after(total, n, tr.batch_size),
                examples_after(total - 1, n, tr.batch_size),
            )
        return got

    def plan(self, device: int, now: float, version: int, params: list[Array] | None) -> Session:
        """``device``'s next session, starting at ``now`` on ``version`` (the same draws
        and arithmetic as :func:`session_hash`, :func:`steps_within_budget` and
        :meth:`Fleet.window_end`, inlined: a session is planned per update or more)."""
        fleet, tr = self.fleet, self.training
        trip = self._trips[device]
        self._trips[device] = trip + 1
        tier = fleet.tier_of[device]
        prefix = self._prefix[device]
        if prefix is None:
            prefix = self._prefix[device] = rand.key_seed(self.seed, device)
        h = rand.extend(prefix, trip)  # = session_hash(seed, device, trip)
        spe = float(fleet.seconds_of[device])
        if self._session_sigma:
            spe *= session_factor(self._session_sigma, rand.normal(h, _SESSION_SPEED))
        n = self._n[device]
        total, examples, before_last = self._budget(n)
        if not before_last * spe < tr.time_budget_s:  # cut short by the time budget
            steps = steps_within_budget(n, tr.batch_size, tr.epochs, spe, tr.time_budget_s)
            examples = examples_after(steps, n, tr.batch_size)
        else:
            steps = total
        bytes_down = self.params_bytes
        if not self._has_graphs[device]:
            bytes_down += self.graph_bytes
            self._has_graphs[device] = 1
        rtt = self._rtt
        down_s = rtt + bytes_down * 8.0 / float(fleet.down_of[device])
        train_s = examples * spe
        up_s = rtt + self.params_bytes * 8.0 / float(fleet.up_of[device])
        sid = self._next_sid
        self._next_sid = sid + 1
        session = Session(
            sid,
            device,
            tier,
            trip,
            now,
            version,
            params,
            h,
            steps,
            examples,
            down_s,
            train_s,
            up_s,
            bytes_down,
            self.params_bytes,
        )
        end = now + down_s + train_s + up_s  # = session.end
        drop, drop_at = rand.pair(h, _DROP)
        if drop < self._dropout[tier]:
            session.drop_at = now + drop_at * (end - now)
            session.drop_cause = "dropout"
        if not self._always:
            closes = fleet.window_end(device, now)
            if closes < min(end, session.drop_at):
                session.drop_at = closes
                session.drop_cause = "unavailable"
        return session
