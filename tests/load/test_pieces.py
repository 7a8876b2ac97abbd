"""The load tools' building blocks: the synthetic bundle, the upload bytes, training times."""

from __future__ import annotations

import random

import numpy as np
import pytest

from client_sdk.bundle import Bundle
from client_sdk.trainer import Trainer, TrainPlan
from load_tests import loadgen
from load_tests.bundle import linear_bundle, num_params
from load_tests.training import TrainTime
from server.updates import parse_update


def test_the_400k_model_has_about_100k_float32_parameters() -> None:
    parts = linear_bundle("linear_100k")

    assert num_params("linear_100k") == 100_100
    assert parts.param_shapes == [(100, 1000), (100,)]


def test_the_synthetic_bundle_is_a_real_bundle_the_sdk_trains() -> None:
    parts = linear_bundle("linear_1k")
    bundle = Bundle.from_parts(parts.manifest, parts.graphs, parts.params)
    trainer = Trainer(bundle)
    rng = np.random.default_rng(0)
    x = rng.random((256, 64), dtype=np.float32)
    y = x[:, :16].argmax(1).astype(np.int64)

    before = trainer.evaluate(bundle.initial_params, x, y)
    result = trainer.train(bundle.initial_params, x, y, TrainPlan(lr=0.5, batch_size=32, epochs=10))
    trained = [p + d for p, d in zip(bundle.initial_params, result.delta, strict=True)]
    after = trainer.evaluate(trained, x, y)

    assert after.loss < before.loss
    assert after.accuracy is not None and after.accuracy > 0.5


def test_load_generator_bodies_are_valid_updates_for_the_server() -> None:
    shapes = linear_bundle("linear_10k").param_shapes
    head = loadgen.update_head(shapes, base_version=7)

    payload = parse_update(loadgen.body(head, "s1.token.sig"))

    assert payload.session == "s1.token.sig"
    assert payload.base_version == 7
    assert [t.shape for t in payload.tensors] == shapes
    assert all(t.dtype == np.float32 and np.isfinite(t).all() for t in payload.tensors)


def test_lognormal_training_times_have_the_asked_median_and_a_heavy_tail() -> None:
    train_time = TrainTime.parse("lognormal:30:1")
    rng = random.Random(1)

    samples = sorted(train_time.sample(rng) for _ in range(20_000))

    assert 28 < samples[len(samples) // 2] < 32
    assert samples[int(len(samples) * 0.99)] > 250  # e^2.33 x 30: far past four minutes


@pytest.mark.parametrize("spec", ["lognormal:30", "gamma:1:2", "exp:-1", "pareto:1:0", "const:x"])
def test_bad_training_time_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="bad training time"):
        TrainTime.parse(spec)
