"""The discrete-event core both modes share: virtual clock, event queue, sessions,
evaluation at a fixed virtual-time cadence, stop conditions and progress.

Events at the same virtual time run in a fixed order: update arrivals, then deadlines
and lease expiries, then device check-ins, then the evaluation; ties keep insertion
order. So a slot freed by an arrival is refilled only after that arrival's server step,
exactly as a sync round starts only after the previous one closed.

A DP run (:mod:`simulator.privacy`) adds the server's two limits: a participation limit
(``min_separation``: a device checks in at most once every N versions, see
:class:`~simulator.selection.DevicePicker`) and a ``version_limit`` (the last version
the privacy budget allows): the run ends when it is committed, with status ``budget``,
as the server pauses the task there.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

from server.aggregation import make_aggregator
from simulator.config import ModeConfig, RunConfig, TrainingConfig
from simulator.environment import Environment
from simulator.ledger import Ledger, LedgerView
from simulator.results import RunResult
from simulator.selection import DevicePicker
from simulator.sessions import Session, SessionPlanner
from simulator.training import Diverged, LocalUpdate, TrainJob

__all__ = ["ADMIT", "ARRIVE", "DEADLINE", "EVAL", "Simulation"]

logger = logging.getLogger(__name__)

ARRIVE, DEADLINE, ADMIT, EVAL = 0, 1, 2, 3
RETRY_S = 30.0  # how long a slot waits when no eligible idle device was found
MAX_BATCH = 512  # sessions a batched trainer trains in one call (stacks < 32 MB: glibc
# then reuses freed heap instead of mapping and faulting in fresh pages every call)

Handler = Callable[[Any], None]


class Simulation:
    """Base of :class:`~simulator.fedbuff.AsyncSimulation` and
    :class:`~simulator.rounds.SyncSimulation`; :meth:`run` once per instance."""

    mode: ClassVar[str]

    def __init__(
        self,
        env: Environment,
        mode: ModeConfig,
        *,
        training: TrainingConfig | None = None,
        run: RunConfig | None = None,
        label: str = "",
        progress: Callable[[str], None] | None = None,
        trace: bool = False,
        min_separation: int = 0,
        version_limit: int | None = None,
    ) -> None:
        if mode.mode != self.mode:
            raise ValueError(f"{type(self).__name__} runs {self.mode} configs, got {mode.mode}")
        preset = env.preset
        self.env = env
        self.cfg = mode
        if training is None:
            training = preset.training
            if mode.client_lr is not None:
                training = replace(training, client_lr=mode.client_lr)
        self.training = training
        self.run_cfg = run or preset.run
        self.label = label or f"{self.mode} C={mode.concurrency}"
        self._progress = progress
        seed = preset.seed
        self.agg = make_aggregator(env.trainer.initial_params(), mode.aggregation)
        self.agg.version_limit = version_limit
        self.picker = DevicePicker(env.fleet, seed, min_separation=min_separation)
        self.planner = SessionPlanner(
            env.fleet,
            env.shards.sizes,
            self.training,
            params_bytes=env.trainer.params_bytes,
            graph_bytes=env.trainer.graph_bytes,
            seed=seed,
        )
        self.ledger = Ledger(env.fleet.tiers)
        self.now = 0.0
        self.done = False
        self.status = "limit"  # or "reached" / "diverged" / "stalled"
        self.active = self.max_active = self.trained = 0
        self.curve: list[tuple[float, float]] = []
        self.trace: list[tuple[int, float, float]] | None = [] if trace else None
        # with trace: (device, base version, version it is part of) per accepted update
        self.accepted: list[tuple[int, int, int]] | None = [] if trace else None
        self._batched = getattr(env.trainer, "batched", False)
        self._untrained: dict[int, Session] = {}
        self._trained: dict[int, LocalUpdate] = {}
        self._heap: list[tuple[float, int, int, Handler, Any]] = []
        self._seq = 0
        self._params_version = -1
        self._params: list[Any] = []
        self._eval_version = -1
        self._accuracy = 0.0
        self._reached: float | None = None
        self._best = (-1.0, 0.0)  # best accuracy so far and when
        self._candidate: tuple[float, LedgerView, dict[str, float]] | None = None
        self._until_target: LedgerView | None = None
        self._tier_accuracy: dict[str, float] = {}
        self._wall_start = self._last_progress = self._cpu_start = 0.0

    # -- events ------------------------------------------------------------------------

    def push(self, at: float, priority: int, handler: Handler, arg: Any = None) -> None:
        heapq.heappush(self._heap, (at, priority, self._seq, handler, arg))
        self._seq += 1

    def _start(self) -> None:
        raise NotImplementedError

    def run(self) -> RunResult:
        """Simulate until the target (if ``stop_at_target``) or the run's limits."""
        self._wall_start = self._last_progress = time.perf_counter()
        self._cpu_start = time.process_time()
        self._start()
        self.push(0.0, EVAL, self._evaluate)
        limit, max_trips, heap = self.run_cfg.max_virtual_s, self.run_cfg.max_trips, self._heap
        try:
            while heap and not self.done:
                at, _, _, handler, arg = heapq.heappop(heap)
                if at > limit or self.ledger.trips >= max_trips:
                    break
                self.now = at
                handler(arg)
        except Diverged as exc:
            logger.warning("%s diverged at virtual %.0f s: %s", self.label, self.now, exc)
            self.status = "diverged"
        if self.status == "budget" and self._eval_version != self.agg.version:
            self._evaluate_final()
        if self._reached is not None and self.status != "budget":
            self.status = "reached"
        return self._result()

    def committed(self) -> None:
        """Called after an update was folded: end the run at the version limit."""
        if self.agg.at_version_limit:
            self.status, self.done = "budget", True

    def _evaluate_final(self) -> None:
        """The last version's accuracy (the run ended between two evaluations)."""
        self._accuracy = self.env.trainer.accuracy(self.current_params(), *self.env.test_set)
        self._eval_version = self.agg.version
        self.curve.append((self.now, self._accuracy))

    # -- sessions ------------------------------------------------------------------------

    def current_params(self) -> list[Any]:
        """The aggregator's parameters, fetched once per version (read-only arrays)."""
        if self._params_version != self.agg.version:
            self._params = self.agg.params
            self._params_version = self.agg.version
        return self._params

    def begin(self, device: int) -> Session:
        s = self.planner.plan(device, self.now, self.agg.version, self.current_params())
        self.ledger.started(s)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if s.drop_at < self.run_cfg.max_virtual_s:
            self.push(s.drop_at, DEADLINE, self._dropped, s)
        return s

    def _dropped(self, s: Session) -> None:
        """Book a dropout's work when it happens (its slot is freed by the mode)."""
        if not s.booked:
            s.booked = True
            self.ledger.finished(s, s.drop_at, uploaded=False, waste=s.drop_cause)

    def end(self, s: Session, worked_until: float, *, uploaded: bool, waste: str | None) -> None:
        """Book ``s`` (work up to ``worked_until``) unless done already, and free its
        device and slot now."""
        if not s.booked:
            s.booked = True
            self.ledger.finished(s, worked_until, uploaded=uploaded, waste=waste)
        self.picker.release(s.device)
        self.active -= 1
        s.params = None
        self._untrained.pop(s.sid, None)
        self._trained.pop(s.sid, None)
        if self.trace is not None:
            self.trace.append((s.device, s.start, self.now))

    def expect(self, s: Session) -> None:
        """Note that ``s`` will upload, so a batched trainer may train it ahead."""
        if self._batched:
            self._untrained[s.sid] = s

    def train(self, s: Session) -> LocalUpdate:
        """``s``'s update, from the base parameters it was handed at its start.

        Training is a pure function of (base parameters, shard, seed, steps), so when
        it happens in wall-clock time does not matter: a batched trainer trains the
        sessions expected to upload next together, and this returns the stored result.
        """
        self.trained += 1
        done = self._trained.pop(s.sid, None)
        if done is not None:
            return done
        batch = self.training_batch(s) if self._batched else [s]
        tr = self.training
        jobs = []
        for b in batch:
            x, y = self.env.shards.shard(b.device)
            assert b.params is not None, "a session trains once"
            jobs.append(TrainJob(b.params, x, y, b.steps, b.seed))
            self._untrained.pop(b.sid, None)
            b.params = None
        updates = self.env.trainer.train_many(
            jobs, lr=tr.client_lr, batch_size=tr.batch_size, epochs=tr.epochs
        )
        for b, update in zip(batch[1:], updates[1:], strict=True):
            self._trained[b.sid] = update
        return updates[0]

    def training_batch(self, s: Session) -> list[Session]:
        """``s`` first, then the other expected sessions in arrival order (bounded)."""
        others = sorted((o for o in self._untrained.values() if o is not s), key=lambda o: o.end)
        return [s, *others[: MAX_BATCH - 1]]

    # -- evaluation ------------------------------------------------------------------------

    def _evaluate(self, _: Any) -> None:
        env = self.env
        if self._eval_version != self.agg.version:
            self._accuracy = env.trainer.accuracy(self.current_params(), *env.test_set)
            self._eval_version = self.agg.version
        self.curve.append((self.now, self._accuracy))
        if self._accuracy > self._best[0]:
            self._best = (self._accuracy, self.now)
        patience = self.run_cfg.patience_s
        if patience and self.now - self._best[1] > patience and self._reached is None:
            self.status, self.done = "stalled", True
        if self._reached is None:
            self._check_target()
        self._report_progress()
        self.push(self.now + self.run_cfg.eval_every_s, EVAL, self._evaluate)

    def _check_target(self) -> None:
        """The target counts once accuracy stays at or above it for ``hold_s``; the
        books and tier accuracies are those of the first evaluation of that stretch."""
        if self._accuracy < self.run_cfg.target:
            self._candidate = None
            return
        if self._candidate is None:
            self._candidate = (self.now, self.ledger.view(), self._tier_accuracies())
        since, books, tiers = self._candidate
        if self.now - since >= self.run_cfg.hold_s:
            self._reached, self._until_target, self._tier_accuracy = since, books, tiers
            self.done = self.run_cfg.stop_at_target

    def _tier_accuracies(self) -> dict[str, float]:
        env, params = self.env, self.current_params()
        return {
            tier.name: env.trainer.accuracy(params, *xy)
            for tier, xy in zip(env.fleet.tiers, env.tier_test_sets, strict=True)
        }

    def _report_progress(self) -> None:
        wall = time.perf_counter()
        if self._progress is None or wall - self._last_progress < self.run_cfg.progress_every_s:
            return
        self._last_progress = wall
        rate = self.trained / max(wall - self._wall_start, 1e-9)
        self._progress(
            f"{self.label}: virtual {self.now:,.0f} s, accuracy {self._accuracy:.3f}, "
            f"version {self.agg.version}, trips {self.ledger.trips:,}, "
            f"trained {self.trained:,} ({rate:,.0f}/s)"
        )

    def _result(self) -> RunResult:
        if not self._tier_accuracy:
            self._tier_accuracy = self._tier_accuracies()
        agg = self.agg.config
        stats = self.agg.stats
        hyper: dict[str, Any] = {
            "client_lr": self.training.client_lr,
            "server_lr": agg.optimizer.lr,
            "optimizer": agg.optimizer.name,
            "server_momentum": agg.optimizer.momentum if agg.optimizer.name == "fedavgm" else 0.0,
            "aggregation_goal": agg.aggregation_goal,
            "noise_multiplier": agg.noise_multiplier,
        }
        if self.mode == "sync":
            hyper["over_selection"] = agg.over_selection
        return RunResult(
            label=self.label,
            mode=self.mode,
            status=self.status,
            concurrency=self.cfg.concurrency,
            hyper=hyper,
            target=self.run_cfg.target,
            time_to_target=self._reached,
            curve=self.curve,
            until_target=self._until_target,
            final=self.ledger.view(),
            tier_accuracy=self._tier_accuracy,
            final_accuracy=self._accuracy,
            trained=self.trained,
            versions=self.agg.version,
            max_active=self.max_active,
            virtual_s=self.now,
            wall_s=time.perf_counter() - self._wall_start,
            cpu_s=time.process_time() - self._cpu_start,
            stats={
                "rejected": stats.rejected,
                "folded": stats.folded,
                "clipped": stats.clipped,
                "staleness_mean": stats.staleness_mean,
                "rounds_abandoned": stats.rounds_abandoned,
                "updates_dropped": stats.updates_dropped,
                "async_lease_s": self.training.session_timeout_s,
            },
        )
