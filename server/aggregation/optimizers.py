"""Server optimizers over the pseudo-gradient (Reddi et al., ICLR 2021, Algorithm 2).

``pseudo_grad`` is the aggregated client *delta* (new - base), so it points downhill and
every rule adds it: FedAvg ``x += lr * d``; FedAvgM ``m = mu * m + d; x += lr * m``;
FedAdam/FedYogi/FedAdagrad::

    m = beta1 * m + (1 - beta1) * d
    v = v + d^2                                    (FedAdagrad)
    v = v - (1 - beta2) * d^2 * sign(v - d^2)      (FedYogi)
    v = beta2 * v + (1 - beta2) * d^2              (FedAdam)
    x += lr * m / (sqrt(v) + tau)

with ``m`` starting at 0 and ``v`` at ``tau^2`` (the paper asks ``v_-1 >= tau^2``).
There is no bias correction, as in the paper. Flower differs: its FedAdam multiplies
lr by ``sqrt(1 - beta2^t) / (1 - beta1^t)`` and starts ``v`` at 0, and under NumPy 2
its step silently turns the model into float64. Here parameters and state stay
float32; every step works in place with scratch buffers allocated once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from server.aggregation import blas
from server.aggregation.config import AggregationConfig, OptimizerConfig
from server.aggregation.validation import Flat

__all__ = ["ServerOptimizer", "make_optimizer"]


class ServerOptimizer(Protocol):
    """Updates float32 parameters in place from a pseudo-gradient of the same shapes."""

    config: OptimizerConfig

    def step(self, params: Sequence[Flat], pseudo_grad: Sequence[Flat]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """``name``, ``steps`` and the live 1-D float32 state arrays (copy to keep them)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_optimizer(
    config: OptimizerConfig | AggregationConfig | Mapping[str, Any],
) -> ServerOptimizer:
    """The optimizer of ``config``: an optimizer config, its JSON form or a whole
    aggregation config."""
    if isinstance(config, AggregationConfig):
        config = config.optimizer
    elif not isinstance(config, OptimizerConfig):
        config = OptimizerConfig.from_dict(config)
    if config.name == "fedavg":
        return FedAvg(config)
    if config.name == "fedavgm":
        return FedAvgM(config)
    return FedAdaptive(config)


def _copies(arrays: Sequence[Any]) -> list[Flat]:
    return [np.array(a, dtype=np.float32) for a in arrays]


def _writable_flat(x: Flat) -> Flat:
    """A 1-D view of a parameter tensor; refuses anything a view cannot update in place."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        raise ValueError("server optimizers update C-contiguous writable float32 arrays")
    return x.reshape(-1)


def _flat(d: Flat) -> Flat:
    return np.ascontiguousarray(d, dtype=np.float32).reshape(-1)


class FedAvg:
    """``x += lr * d``: one fused pass per tensor."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config
        self.steps = 0

    def step(self, params: Sequence[Flat], pseudo_grad: Sequence[Flat]) -> None:
        for x, d in zip(params, pseudo_grad, strict=True):
            blas.add_scaled(_writable_flat(x), _flat(d), self.config.lr)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.config.name, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])


class FedAvgM:
    """Server momentum: ``m = mu * m + d; x += lr * m``."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config
        self.steps = 0
        self.m: list[Flat] | None = None

    def step(self, params: Sequence[Flat], pseudo_grad: Sequence[Flat]) -> None:
        if self.m is None:
            self.m = [np.zeros(x.size, dtype=np.float32) for x in params]
        for x, d, m in zip(params, pseudo_grad, self.m, strict=True):
            m *= np.float32(self.config.momentum)
            blas.add_scaled(m, _flat(d), 1.0)
            blas.add_scaled(_writable_flat(x), m, self.config.lr)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.config.name, "steps": self.steps, "m": self.m}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.m = None if state["m"] is None else _copies(state["m"])


class FedAdaptive:
    """FedAdam, FedYogi and FedAdagrad: they differ only in how ``v`` is updated."""

    def __init__(self, config: OptimizerConfig) -> None:
        self.config = config
        self.steps = 0
        self.m: list[Flat] | None = None
        self.v: list[Flat] | None = None
        self._scratch: list[Flat] = []

    def step(self, params: Sequence[Flat], pseudo_grad: Sequence[Flat]) -> None:
        c = self.config
        if self.m is None or self.v is None:
            self.m = [np.zeros(x.size, dtype=np.float32) for x in params]
            self.v = [np.full(x.size, c.tau**2, dtype=np.float32) for x in params]
        if len(self._scratch) != len(params):
            self._scratch = [np.empty((2, x.size), dtype=np.float32) for x in params]
        for x, d, m, v, (sq, tmp) in zip(
            params, pseudo_grad, self.m, self.v, self._scratch, strict=True
        ):
            d = _flat(d)
            m *= np.float32(c.beta1)
            blas.add_scaled(m, d, 1.0 - c.beta1)
            np.multiply(d, d, out=sq)
            if c.name == "fedadagrad":
                v += sq
            elif c.name == "fedyogi":
                np.subtract(v, sq, out=tmp)
                np.sign(tmp, out=tmp)
                sq *= tmp
                blas.add_scaled(v, sq, -(1.0 - c.beta2))
            else:
                v *= np.float32(c.beta2)
                blas.add_scaled(v, sq, 1.0 - c.beta2)
            np.sqrt(v, out=tmp)
            tmp += np.float32(c.tau)
            np.divide(m, tmp, out=tmp)
            blas.add_scaled(_writable_flat(x), tmp, c.lr)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.config.name, "steps": self.steps, "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.m = None if state["m"] is None else _copies(state["m"])
        self.v = None if state["v"] is None else _copies(state["v"])
