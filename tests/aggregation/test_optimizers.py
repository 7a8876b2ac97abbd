"""Server optimizers against a plain float64 transcription of Reddi et al. Algorithm 2."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.aggregation import OptimizerConfig, make_optimizer


def reference_steps(
    config: OptimizerConfig, x: list[np.ndarray], deltas: list[list[np.ndarray]]
) -> list[np.ndarray]:
    """The paper's update rules, written out the obvious way in float64."""
    x = [a.astype(np.float64) for a in x]
    m = [np.zeros_like(a) for a in x]
    v = [np.full_like(a, config.tau**2) for a in x]
    for delta in deltas:
        for i, d in enumerate(delta):
            d = d.astype(np.float64)
            if config.name == "fedavg":
                x[i] = x[i] + config.lr * d
                continue
            if config.name == "fedavgm":
                m[i] = config.momentum * m[i] + d
                x[i] = x[i] + config.lr * m[i]
                continue
            m[i] = config.beta1 * m[i] + (1 - config.beta1) * d
            if config.name == "fedadagrad":
                v[i] = v[i] + d**2
            elif config.name == "fedyogi":
                v[i] = v[i] - (1 - config.beta2) * d**2 * np.sign(v[i] - d**2)
            else:
                v[i] = config.beta2 * v[i] + (1 - config.beta2) * d**2
            x[i] = x[i] + config.lr * m[i] / (np.sqrt(v[i]) + config.tau)
    return x


def random_problem(seed: int, steps: int) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (7,)]
    x = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    deltas = [
        [(0.1 * rng.standard_normal(s)).astype(np.float32) for s in shapes] for _ in range(steps)
    ]
    return x, deltas


OPTIMIZERS = [
    OptimizerConfig.of("fedavg", lr=0.7),
    OptimizerConfig.of("fedavgm", lr=0.7, momentum=0.9),
    OptimizerConfig.of("fedadam", lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3),
    OptimizerConfig.of("fedyogi", lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3),
    OptimizerConfig.of("fedadagrad", lr=0.05, beta1=0.5, beta2=0.99, tau=1e-2),
]


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 6))
def test_optimizer_matches_the_paper_formulas(
    config: OptimizerConfig, seed: int, steps: int
) -> None:
    x, deltas = random_problem(seed, steps)
    expected = reference_steps(config, x, deltas)
    optimizer = make_optimizer(config)

    for delta in deltas:
        optimizer.step(x, delta)

    for got, want in zip(x, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", OPTIMIZERS, ids=lambda c: c.name)
def test_state_dict_round_trip_continues_identically(config: OptimizerConfig) -> None:
    x, deltas = random_problem(7, 4)
    y = [a.copy() for a in x]
    first, second = make_optimizer(config), make_optimizer(config)
    for delta in deltas[:2]:
        first.step(x, delta)
        second.step(y, delta)
    state: dict[str, Any] = second.state_dict()
    resumed = make_optimizer(config)
    resumed.load_state_dict(state)

    for delta in deltas[2:]:
        first.step(x, delta)
        resumed.step(y, delta)

    for a, b in zip(x, y, strict=True):
        assert a.tobytes() == b.tobytes()


def test_optimizer_refuses_parameters_it_cannot_update_in_place() -> None:
    optimizer = make_optimizer(OptimizerConfig())
    params = [np.zeros((3, 4), np.float32).T]  # not C-contiguous: a reshape would copy

    with pytest.raises(ValueError, match="C-contiguous"):
        optimizer.step(params, [np.ones((4, 3), np.float32)])


def test_pseudo_gradient_is_not_modified() -> None:
    x, deltas = random_problem(3, 1)
    before = [d.copy() for d in deltas[0]]

    make_optimizer(OptimizerConfig.of("fedyogi")).step(x, deltas[0])

    for d, b in zip(deltas[0], before, strict=True):
        assert np.array_equal(d, b)
