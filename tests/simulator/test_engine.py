"""The event engine: FedAvg equivalence, determinism and ordering invariants."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from simulator.engine import Simulation
from simulator.environment import Environment
from simulator.experiments import run_mode
from simulator.fedbuff import AsyncSimulation
from simulator.rounds import SyncSimulation
from simulator.sessions import session_hash, training_seed
from simulator.training import Diverged, TrainJob
from tests.simulator.support import tiny_env

C = 12
# One tier, every device equally fast, shards all 10 examples, no network time, no
# dropouts, always available: every session of a round lasts exactly 10 s.
LOCKSTEP = (
    "fleet.tiers=[{name = 'only', share = 1.0, speed = {kind = 'trace', values = [1.0]}, "
    "down_mbps = inf, up_mbps = inf}]",
    "fleet.rtt_s=0",
    "data.size_median=10",
    "data.min_size=10",
    "data.max_size=10",
    f"async.concurrency={C}",
    f"async.aggregation_goal={C}",
    "async.optimizer={name = 'fedavg', lr = 1.0}",
    f"sync.concurrency={C}",
    "sync.over_selection=0",
    "sync.optimizer={name = 'fedavg', lr = 1.0}",
    "run.stop_at_target=false",
    "run.max_virtual_s=95",
)


def _run(cls: type[Simulation], env: Environment, **kwargs: Any) -> Simulation:
    mode = env.preset.async_mode if cls is AsyncSimulation else env.preset.sync_mode
    sim = cls(env, mode, trace=True, **kwargs)
    sim.run()
    return sim


def test_async_with_k_equal_c_and_one_lockstep_tier_is_exactly_sync_fedavg() -> None:
    env = tiny_env(*LOCKSTEP)

    fedbuff = _run(AsyncSimulation, env)
    rounds = _run(SyncSimulation, env)

    assert fedbuff.agg.version == rounds.agg.version == 9
    for a, s in zip(fedbuff.agg.params, rounds.agg.params, strict=True):
        assert np.array_equal(a, s)
    assert fedbuff.curve == rounds.curve
    assert fedbuff.trace == rounds.trace


def test_lockstep_async_matches_a_hand_written_fedavg_loop() -> None:
    env = tiny_env(*LOCKSTEP)
    sim = _run(AsyncSimulation, env)
    assert sim.trace is not None
    cohorts: dict[float, list[int]] = defaultdict(list)
    for device, start, _ in sim.trace:
        cohorts[start].append(device)
    tr, trips = env.preset.training, Counter[int]()

    params = env.trainer.initial_params()
    for start in sorted(cohorts)[: sim.agg.version]:
        jobs = []
        for device in cohorts[start]:
            x, y = env.shards.shard(device)
            seed = training_seed(session_hash(env.preset.seed, device, trips[device]))
            trips[device] += 1
            jobs.append(TrainJob(params, x, y, 2, seed))
        updates = env.trainer.train_many(
            jobs, lr=tr.client_lr, batch_size=tr.batch_size, epochs=tr.epochs
        )
        params = [p + np.mean([u.delta[i] for u in updates], axis=0) for i, p in enumerate(params)]

    assert len(cohorts[0.0]) == C
    for got, want in zip(sim.agg.params, params, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_same_seed_gives_the_same_result(mode: str) -> None:
    runs = []
    for _ in range(2):
        env = tiny_env()
        cfg = env.preset.async_mode if mode == "async" else env.preset.sync_mode
        result = run_mode(env, cfg).to_dict()
        result.pop("wall_s")
        result.pop("cpu_s")
        runs.append(result)

    assert runs[0] == runs[1]
    assert runs[0]["time_to_target"] is not None


def test_another_seed_gives_another_run() -> None:
    a = run_mode(tiny_env(), tiny_env().preset.async_mode)
    env = tiny_env("seed=4")
    b = run_mode(env, env.preset.async_mode)

    assert a.curve != b.curve


@pytest.mark.parametrize("cls", [AsyncSimulation, SyncSimulation])
def test_no_device_runs_two_sessions_and_concurrency_never_exceeds_c(
    cls: type[Simulation],
) -> None:
    env = tiny_env("run.stop_at_target=false", "run.max_virtual_s=1500")
    sim = _run(cls, env)
    assert sim.trace is not None and len(sim.trace) > 200

    by_device: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for device, start, end in sim.trace:
        assert end >= start
        by_device[device].append((start, end))
    for spans in by_device.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end
    events = sorted([(s, 1) for _, s, _ in sim.trace] + [(e, -1) for _, _, e in sim.trace])
    assert max(np.cumsum([step for _, step in events])) <= sim.cfg.concurrency
    assert 0 < sim.max_active <= sim.cfg.concurrency


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_training_ahead_in_batches_changes_nothing(mode: str) -> None:
    results = []
    for batched in (False, True):
        env = tiny_env(batched=batched)
        cfg = env.preset.async_mode if mode == "async" else env.preset.sync_mode
        result = run_mode(env, cfg).to_dict()
        result.pop("wall_s")
        result.pop("cpu_s")
        results.append(result)

    assert results[0] == results[1]


def test_sync_wastes_stragglers_and_async_wastes_dropouts() -> None:
    env = tiny_env("run.stop_at_target=false", "run.max_virtual_s=1200")

    fedbuff = run_mode(env, env.preset.async_mode)
    rounds = run_mode(env, env.preset.sync_mode)

    assert rounds.final.wasted["over_selection"]["sessions"] > 0
    assert fedbuff.final.wasted["over_selection"]["sessions"] == 0
    for run in (fedbuff, rounds):
        assert run.final.wasted["dropout"]["sessions"] > 0
        led = run.final
        wasted = sum(int(w["sessions"]) for w in led.wasted.values())
        assert led.applied + wasted <= led.trips
        assert led.applied == sum(t["applied"] for t in led.tiers.values())
        assert led.energy_j == pytest.approx(sum(t["energy_j"] for t in led.tiers.values()))


def test_a_stale_update_beyond_max_staleness_is_wasted_work() -> None:
    env = tiny_env("async.max_staleness=1", "async.aggregation_goal=2")

    result = run_mode(env, env.preset.async_mode)

    assert result.ledger.wasted["staleness"]["sessions"] > 0
    assert result.stats["rejected"]["too_stale"] >= result.ledger.wasted["staleness"]["sessions"]


def test_a_run_stops_at_the_target_and_books_the_ledger_there() -> None:
    env = tiny_env()

    result = run_mode(env, env.preset.async_mode)

    assert result.status == "reached"
    assert result.time_to_target == result.curve[-1][0]
    assert result.curve[-1][1] >= env.preset.run.target > result.curve[-2][1]
    assert result.until_target is not None
    assert result.until_target.trips == result.final.trips
    assert set(result.tier_accuracy) == {"fast", "slow"}


def test_with_hold_the_target_counts_only_once_accuracy_stays_above_it() -> None:
    env = tiny_env("run.hold_s=40", "run.target=0.55")

    result = run_mode(env, env.preset.async_mode)

    reached = result.time_to_target
    assert reached is not None
    held = [a for t, a in result.curve if reached <= t <= reached + 40]
    assert len(held) == 5 and min(held) >= 0.55
    before = [a for t, a in result.curve if t == reached - 10]
    assert not before or before[0] < 0.55
    assert result.curve[-1][0] == reached + 40


def test_patience_stops_a_run_that_no_longer_improves() -> None:
    env = tiny_env("run.target=0.99", "run.patience_s=100", "run.max_virtual_s=5000")

    result = run_mode(env, env.preset.async_mode)

    assert result.status == "stalled"
    best_at = max(result.curve, key=lambda p: p[1])[0]
    assert 100 < result.virtual_s - best_at <= 110


def test_a_diverging_trainer_ends_the_run_as_diverged() -> None:
    env = tiny_env()
    real = env.trainer

    class Exploding:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def train_many(self, jobs: Any, **kwargs: Any) -> Any:
            raise Diverged("loss is nan")

    env.trainer = Exploding()  # type: ignore[assignment]

    result = run_mode(env, env.preset.sync_mode)

    assert result.status == "diverged"
    assert result.time_to_target is None


def test_a_dropout_is_booked_when_it_happens_not_when_its_lease_ends() -> None:
    env = tiny_env("run.stop_at_target=false", "run.max_virtual_s=80")

    result = run_mode(env, env.preset.async_mode)

    # leases last 90 s, so every slot a dropout holds is still held at 80 s
    assert result.final.wasted["dropout"]["sessions"] > 0
