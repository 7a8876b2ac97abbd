"""Local training: the simulator's ONNX and batched paths give the SDK trainer's numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from client_sdk.trainer import TrainPlan
from server.modeling.datasets import load_dataset
from simulator.batched import (
    RTOL,
    DenseBatchTrainer,
    GateFailed,
    gate_jobs,
    relative_difference,
    supports,
    verify,
)
from simulator.errors import SimulatorError
from simulator.training import Diverged, OnnxTrainer, TrainJob

Array = np.ndarray[Any, Any]


def _jobs(trainer: OnnxTrainer, count: int, *, seed: int = 0) -> list[TrainJob]:
    x_train, y_train, _, _ = load_dataset("digits")
    rng = np.random.default_rng(seed)
    base = trainer.initial_params()
    jobs = []
    for i in range(count):
        n = int(rng.integers(1, 70))
        idx = rng.integers(0, len(x_train), n)
        params = [(p + rng.normal(0, 0.05, p.shape)).astype(np.float32) for p in base]
        jobs.append(TrainJob(params, x_train[idx], y_train[idx], int(rng.integers(1, 9)), i))
    return jobs


@pytest.mark.parametrize(("batch_size", "epochs"), [(8, 1), (16, 3), (32, 2)])
def test_the_onnx_path_is_bit_identical_to_the_sdk_trainer(
    onnx_trainer: OnnxTrainer, batch_size: int, epochs: int
) -> None:
    for job in _jobs(onnx_trainer, 12):
        plan = TrainPlan(lr=0.2, batch_size=batch_size, epochs=epochs, max_steps=job.steps)

        got = onnx_trainer.train(
            job.params,
            job.x,
            job.y,
            lr=0.2,
            batch_size=batch_size,
            epochs=epochs,
            steps=job.steps,
            seed=job.seed,
        )
        want = onnx_trainer.train_reference(job.params, job.x, job.y, plan, job.seed)

        assert (got.num_examples, got.steps) == (want.num_examples, want.steps)
        for a, b in zip(got.delta, want.delta, strict=True):
            assert a.dtype == np.float32
            assert np.array_equal(a, b)


@pytest.mark.parametrize(("batch_size", "epochs"), [(8, 1), (16, 3), (32, 2)])
def test_the_batched_path_matches_the_sdk_trainer_to_float32_rounding(
    onnx_trainer: OnnxTrainer, batch_size: int, epochs: int
) -> None:
    batched = DenseBatchTrainer(onnx_trainer)
    jobs = _jobs(onnx_trainer, 40, seed=batch_size)

    got = batched.batched_many(jobs, lr=0.2, batch_size=batch_size, epochs=epochs)  # ungated

    for job, update in zip(jobs, got, strict=True):
        plan = TrainPlan(lr=0.2, batch_size=batch_size, epochs=epochs, max_steps=job.steps)
        want = onnx_trainer.train_reference(job.params, job.x, job.y, plan, job.seed)
        assert (update.num_examples, update.steps) == (want.num_examples, want.steps)
        for a, b in zip(update.delta, want.delta, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def test_jobs_sharing_a_model_version_train_as_if_alone(onnx_trainer: OnnxTrainer) -> None:
    # The engine hands every session of a version the same parameter list; the batched
    # path trains each version's devices in shared products, interleaved with others.
    batched = DenseBatchTrainer(onnx_trainer)
    jobs = _jobs(onnx_trainer, 36, seed=5)
    versions = [job.params for job in jobs[:3]]
    shared = [job._replace(params=versions[i % 3]) for i, job in enumerate(jobs)]

    got = batched.batched_many(shared, lr=0.3, batch_size=16, epochs=2)  # ungated

    for job, update in zip(shared, got, strict=True):
        plan = TrainPlan(lr=0.3, batch_size=16, epochs=2, max_steps=job.steps)
        want = onnx_trainer.train_reference(job.params, job.x, job.y, plan, job.seed)
        assert (update.num_examples, update.steps) == (want.num_examples, want.steps)
        for a, b in zip(update.delta, want.delta, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def test_an_update_is_its_flat_row_and_later_calls_never_overwrite_it(
    onnx_trainer: OnnxTrainer,
) -> None:
    batched = DenseBatchTrainer(onnx_trainer)
    first = batched.batched_many(_jobs(onnx_trainer, 30, seed=1), lr=0.3, batch_size=16, epochs=1)
    kept = [np.concatenate([t.reshape(-1) for t in u.delta]) for u in first]

    for seed in range(2, 8):  # more calls than the pool has blocks, some dropped at once
        batched.batched_many(_jobs(onnx_trainer, 30, seed=seed), lr=0.3, batch_size=16, epochs=1)

    for update, want in zip(first, kept, strict=True):
        assert update.flat is not None and update.flat.flags.c_contiguous
        assert np.array_equal(update.flat, want)  # the delta tensors are views of the row
        assert all(np.shares_memory(t, update.flat) for t in update.delta)


def test_verify_reports_the_worst_relative_difference_and_refuses_above_it(
    onnx_trainer: OnnxTrainer,
) -> None:
    batched = DenseBatchTrainer(onnx_trainer)
    jobs = _jobs(onnx_trainer, 8)

    assert verify(batched, jobs, lr=0.1, batch_size=16, epochs=1) < 1e-5
    with pytest.raises(GateFailed, match=r"differs from Trainer\.train"):
        verify(batched, jobs, lr=0.1, batch_size=16, epochs=1, rtol=0.0)


def test_the_relative_difference_means_the_same_at_every_scale() -> None:
    rng = np.random.default_rng(0)
    want = [
        rng.standard_normal((4, 3)).astype(np.float32),
        rng.standard_normal(4).astype(np.float32),
    ]
    got = [w * np.float32(1.001) for w in want]

    small = relative_difference([g * 1e-6 for g in got], [w * 1e-6 for w in want])

    assert relative_difference(got, want) == pytest.approx(1e-3, rel=1e-2)
    assert small == pytest.approx(1e-3, rel=1e-2)


def test_the_gate_checks_every_configuration_once_from_the_runs_own_jobs(
    onnx_trainer: OnnxTrainer,
) -> None:
    notes: list[str] = []
    batched = DenseBatchTrainer(onnx_trainer, notify=notes.append)
    jobs = _jobs(onnx_trainer, 12)

    for lr, epochs in [(0.3, 1), (1.0, 1), (0.3, 2), (0.3, 1)]:
        batched.train_many(jobs, lr=lr, batch_size=8, epochs=epochs)

    assert sorted(batched.gate) == [(0.3, 8, 1), (0.3, 8, 2), (1.0, 8, 1)]
    assert all(g.path == "batched" and g.rel_diff <= RTOL for g in batched.gate.values())
    # as given, perturbed, and 4 merged shards x (full, one step, half)
    assert {g.jobs for g in batched.gate.values()} == {12 + 12 + 4 * 3}
    assert notes == []


def test_the_gate_cases_include_perturbed_parameters_and_cut_short_budgets(
    onnx_trainer: OnnxTrainer,
) -> None:
    jobs = _jobs(onnx_trainer, 3)

    probe = gate_jobs(jobs, batch_size=8, epochs=2)

    assert len(probe) == 3 + 3 + 3
    assert not np.array_equal(probe[3].params[0], jobs[0].params[0])
    merged = probe[6:]
    assert all(len(j.x) == sum(len(k.x) for k in jobs) for j in merged)
    full = 2 * -(-len(merged[0].x) // 8)
    assert sorted(j.steps for j in merged) == sorted({1, full // 2, full})


def test_a_configuration_the_batched_path_cannot_match_falls_back_to_the_trainer(
    onnx_trainer: OnnxTrainer,
) -> None:
    # rtol 1e-12 is below float32 rounding: no configuration can pass it
    notes: list[str] = []
    batched = DenseBatchTrainer(onnx_trainer, rtol=1e-12, notify=notes.append)
    jobs = _jobs(onnx_trainer, 6)

    got = batched.train_many(jobs, lr=0.5, batch_size=8, epochs=2)

    assert batched.gate[(0.5, 8, 2)].path == "trainer"
    assert len(notes) == 1 and "through the SDK Trainer path" in notes[0]
    for job, update in zip(jobs, got, strict=True):
        plan = TrainPlan(lr=0.5, batch_size=8, epochs=2, max_steps=job.steps)
        want = onnx_trainer.train_reference(job.params, job.x, job.y, plan, job.seed)
        for a, b in zip(update.delta, want.delta, strict=True):
            assert np.array_equal(a, b)  # the Trainer path: bit-identical


def test_a_diverging_configuration_falls_back_and_then_reports_the_divergence(
    onnx_trainer: OnnxTrainer,
) -> None:
    notes: list[str] = []
    batched = DenseBatchTrainer(onnx_trainer, notify=notes.append)
    jobs = _jobs(onnx_trainer, 6)

    with pytest.raises(Diverged):
        batched.train_many(jobs, lr=1e30, batch_size=8, epochs=3)

    assert batched.gate[(1e30, 8, 3)].path == "trainer"
    assert batched.gate[(1e30, 8, 3)].rel_diff == math.inf
    assert len(notes) == 1


def test_only_dense_sgd_classifiers_are_batched(onnx_trainer: OnnxTrainer) -> None:
    assert supports(onnx_trainer) is None
    manifest = onnx_trainer.bundle.manifest
    object.__setattr__(manifest, "model", "cnn")
    try:
        assert "is not one of" in (supports(onnx_trainer) or "")
        with pytest.raises(SimulatorError, match="batched training unavailable"):
            DenseBatchTrainer(onnx_trainer)
    finally:
        object.__setattr__(manifest, "model", "mlp")


def test_evaluation_runs_the_onnx_eval_graph(onnx_trainer: OnnxTrainer) -> None:
    _, _, x_test, y_test = load_dataset("digits")
    params = onnx_trainer.initial_params()

    acc = onnx_trainer.accuracy(params, x_test, y_test)
    same = DenseBatchTrainer(onnx_trainer).accuracy(params, x_test, y_test)

    assert 0.0 <= acc <= 1.0 and acc == same
