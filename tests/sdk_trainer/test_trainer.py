"""The SDK trainer: plans, stop conditions, dynamic batches, optimizer state, errors."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from client_sdk.bundle import GRAPH_NAMES, MANIFEST_FILE, Bundle, sha256_hex
from client_sdk.errors import BundleError, TrainingError
from client_sdk.trainer import Trainer, TrainPlan
from server.modeling.datasets import load_dataset
from tests.modeling.support import BundleCache

Data = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def digits() -> Data:
    x, y, _, _ = load_dataset("digits")
    return x[:200], y[:200]


@pytest.fixture
def logreg(bundles: BundleCache) -> Bundle:
    return Bundle.load(bundles("logreg"))


def test_training_runs_the_planned_epochs_and_learns(logreg: Bundle, digits: Data) -> None:
    x, y = digits
    trainer = Trainer(logreg)
    params = logreg.initial_params

    result = trainer.train(params, x, y, TrainPlan(lr=0.5, batch_size=32, epochs=3))
    trained = [p + d for p, d in zip(params, result.delta, strict=True)]

    assert (result.stopped, result.steps, result.num_examples) == ("completed", 21, 200)
    assert [d.dtype.name for d in result.delta] == ["float32", "float32"]
    assert math.isfinite(result.mean_loss)
    assert result.wall_s > 0
    assert trainer.evaluate(trained, x, y).loss < trainer.evaluate(params, x, y).loss


def test_the_same_seed_gives_the_same_delta(logreg: Bundle, digits: Data) -> None:
    trainer = Trainer(logreg)
    plan = TrainPlan(lr=0.1, batch_size=16)

    first, second, other = (
        trainer.train(logreg.initial_params, *digits, plan, seed=s).delta for s in (3, 3, 4)
    )

    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_one_graph_trains_any_batch_size(logreg: Bundle, digits: Data) -> None:
    trainer = Trainer(logreg)
    x, y = digits
    state = trainer.initial_state()

    for size in (1, 7, 64, 200):
        params, _, loss = trainer.train_step(logreg.initial_params, state, x[:size], y[:size], 0.1)
        assert [p.shape for p in params] == [(10, 64), (10,)]
        assert math.isfinite(loss)


def test_max_steps_stops_training(logreg: Bundle, digits: Data) -> None:
    plan = TrainPlan(lr=0.1, batch_size=10, epochs=2, max_steps=5)

    result = Trainer(logreg).train(logreg.initial_params, *digits, plan)

    assert (result.stopped, result.steps, result.num_examples) == ("max_steps", 5, 50)


def test_the_time_budget_is_checked_between_steps(logreg: Bundle, digits: Data) -> None:
    ticks = itertools.count()  # a fake clock: one second per reading
    plan = TrainPlan(lr=0.1, batch_size=10, time_budget_s=3.5)

    result = Trainer(logreg).train(
        logreg.initial_params, *digits, plan, clock=lambda: float(next(ticks))
    )

    assert result.stopped == "time_budget"
    assert 0 < result.steps < 20


def test_should_continue_false_aborts(logreg: Bundle, digits: Data) -> None:
    calls = itertools.count()
    plan = TrainPlan(lr=0.1, batch_size=10)

    result = Trainer(logreg).train(
        logreg.initial_params, *digits, plan, should_continue=lambda: next(calls) < 3
    )

    assert (result.stopped, result.steps) == ("aborted", 3)


def test_train_batches_makes_one_pass(logreg: Bundle, digits: Data) -> None:
    x, y = digits
    batches = [(x[:10], y[:10]), (x[10:25], y[10:25]), (x[25:28], y[25:28])]

    result = Trainer(logreg).train_batches(logreg.initial_params, batches, TrainPlan(0.1, 99))

    assert (result.stopped, result.steps, result.num_examples) == ("completed", 3, 28)


def test_momentum_state_round_trips_through_the_graph(bundles: BundleCache, digits: Data) -> None:
    sgd = Trainer(Bundle.load(bundles("logreg")))
    momentum_bundle = Bundle.load(bundles("logreg", "momentum"))
    momentum = Trainer(momentum_bundle)
    (x1, y1), (x2, y2) = (digits[0][:32], digits[1][:32]), (digits[0][32:64], digits[1][32:64])
    lr, p0 = 0.1, momentum_bundle.initial_params

    p1, state1, _ = momentum.train_step(p0, momentum.initial_state(), x1, y1, lr)
    p2, state2, _ = momentum.train_step(p1, state1, x2, y2, lr)
    sgd_p2, _, _ = sgd.train_step(p1, [], x2, y2, lr)  # plain SGD from p1: lr * grad2

    grad2 = [(a - b) / lr for a, b in zip(p1, sgd_p2, strict=True)]
    for a, b, buf1, buf2, g2 in zip(p0, p1, state1, state2, grad2, strict=True):
        np.testing.assert_allclose(buf1, (a - b) / lr, atol=1e-4)  # first buffer = grad1
        np.testing.assert_allclose(buf2, 0.9 * buf1 + g2, atol=1e-4)
    np.testing.assert_allclose(p2[0], p1[0] - lr * state2[0], atol=1e-6)


def test_evaluate_and_infer_agree(logreg: Bundle, digits: Data) -> None:
    x, y = digits
    trainer = Trainer(logreg)

    result = trainer.evaluate(logreg.initial_params, x, y, batch_size=64)
    logits = trainer.infer(logreg.initial_params, x)

    shifted = logits - logits.max(1, keepdims=True)
    nll = -(shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(1)))
    assert result.count == 200
    assert logits.shape == (200, 10)
    assert result.accuracy == pytest.approx(np.mean(logits.argmax(1) == y))
    assert result.loss == pytest.approx(nll.mean(), rel=1e-5)


def test_inputs_are_checked_against_the_manifest(logreg: Bundle, digits: Data) -> None:
    trainer = Trainer(logreg)
    x, y = digits
    plan = TrainPlan(lr=0.1, batch_size=8)

    with pytest.raises(TrainingError, match="expected 2 parameter tensors"):
        trainer.train(logreg.initial_params[:1], x, y, plan)
    with pytest.raises(TrainingError, match=r"x must have shape \['batch', 64\]"):
        trainer.train(logreg.initial_params, x[:, :10], y, plan)
    with pytest.raises(TrainingError, match="y must be int64, got float32"):
        trainer.train(logreg.initial_params, x, y.astype(np.float32), plan)
    with pytest.raises(TrainingError, match="no training examples"):
        trainer.train(logreg.initial_params, x[:0], y[:0], plan)


def test_runtime_failures_become_training_errors(logreg: Bundle, digits: Data) -> None:
    x, y = digits
    bad_labels = np.full_like(y, 99)  # out of range for 10 classes

    with pytest.raises(TrainingError, match="ONNX Runtime failed in train_step"):
        Trainer(logreg).train(logreg.initial_params, x, bad_labels, TrainPlan(0.1, 8))


def test_invalid_plans_are_refused() -> None:
    with pytest.raises(TrainingError, match="batch_size"):
        TrainPlan(lr=0.1, batch_size=0)
    with pytest.raises(TrainingError, match="lr"):
        TrainPlan(lr=float("nan"), batch_size=8)


def test_a_graph_onnx_runtime_cannot_load_is_a_bundle_error(logreg: Bundle) -> None:
    manifest = logreg.manifest
    graphs = {n: logreg.graph(n) for n in GRAPH_NAMES}
    graphs["train_step"] = b"not an onnx graph"
    digests = {**manifest.graphs, "train_step": sha256_hex(graphs["train_step"])}
    forged = type(manifest)(**{**manifest.__dict__, "graphs": digests}).to_json()

    with pytest.raises(BundleError, match=r"cannot load train_step\.onnx"):
        Trainer(Bundle.from_parts(forged, graphs, None))


def test_training_with_the_sdk_never_imports_torch_or_onnx(bundles: BundleCache) -> None:
    directory = bundles("logreg")
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from client_sdk.bundle import Bundle
        from client_sdk.trainer import Trainer, TrainPlan

        bundle = Bundle.load({str(directory)!r})
        rng = np.random.default_rng(0)
        x = rng.random((64, 64), dtype=np.float32)
        y = rng.integers(0, 10, 64)
        trainer = Trainer(bundle)
        result = trainer.train(bundle.initial_params, x, y, TrainPlan(lr=0.1, batch_size=16))
        trainer.evaluate(bundle.initial_params, x, y)
        assert result.steps == 4, result
        leaked = sorted(m for m in ("torch", "onnx", "onnxscript") if m in sys.modules)
        assert not leaked, leaked
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=Path.cwd())


def test_bundle_directory_holds_a_manifest(bundles: BundleCache) -> None:
    assert (bundles("logreg") / MANIFEST_FILE).is_file()
