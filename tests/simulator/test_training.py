"""Local training: the simulator's ONNX and batched paths give the SDK trainer's numbers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from client_sdk.trainer import TrainPlan
from server.modeling.datasets import load_dataset
from simulator.batched import DenseBatchTrainer, supports, verify
from simulator.errors import SimulatorError
from simulator.training import OnnxTrainer, TrainJob

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

    got = batched.train_many(jobs, lr=0.2, batch_size=batch_size, epochs=epochs)

    for job, update in zip(jobs, got, strict=True):
        plan = TrainPlan(lr=0.2, batch_size=batch_size, epochs=epochs, max_steps=job.steps)
        want = onnx_trainer.train_reference(job.params, job.x, job.y, plan, job.seed)
        assert (update.num_examples, update.steps) == (want.num_examples, want.steps)
        for a, b in zip(update.delta, want.delta, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)


def test_verify_reports_the_worst_difference_and_refuses_a_wrong_path(
    onnx_trainer: OnnxTrainer,
) -> None:
    batched = DenseBatchTrainer(onnx_trainer)
    jobs = _jobs(onnx_trainer, 8)

    assert verify(batched, jobs, lr=0.1, batch_size=16, epochs=1) < 1e-6
    with pytest.raises(SimulatorError, match="differs from the ONNX trainer"):
        verify(batched, jobs, lr=0.1, batch_size=16, epochs=1, tolerance=0.0)


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
