"""Client optimizers written into the train-step graph, and their torch eager twins.

The state (momentum buffers, Adam moments and step) is an explicit graph input and
output, named ``<kind>.<param name>``; the trainer starts it at zeros. The update
formulas follow ``torch.optim`` (SGD without dampening/Nesterov, Adam without amsgrad)
so the parity gate can compare against the real torch optimizers. Hyperparameters are
baked into the graph; the learning rate is a graph input.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from server.modeling.errors import ExportError

Tensors = Sequence[torch.Tensor]

DEFAULT_HPARAMS: dict[str, dict[str, float]] = {
    "sgd": {"weight_decay": 0.0},
    "momentum": {"momentum": 0.9, "weight_decay": 0.0},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
}
OPTIMIZERS: tuple[str, ...] = tuple(DEFAULT_HPARAMS)


@dataclass(frozen=True)
class GraphOptimizer:
    """One optimizer: its state layout, its in-graph update and its torch reference."""

    name: str
    hparams: dict[str, float]

    def state_specs(
        self, params: Sequence[tuple[str, tuple[int, ...]]]
    ) -> list[tuple[str, tuple[int, ...]]]:
        """(name, shape) of every state tensor, in graph order."""
        if self.name == "momentum":
            return [(f"momentum.{n}", s) for n, s in params]
        if self.name == "adam":
            moments = [(f"adam_m.{n}", s) for n, s in params]
            return [*moments, *((f"adam_v.{n}", s) for n, s in params), ("adam_step", ())]
        return []

    def update(
        self, params: Tensors, grads: Tensors, state: Tensors, lr: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """New parameters and state after one step (pure: traced into the graph)."""
        decay = self.hparams["weight_decay"]
        if decay:
            grads = [g + decay * p for p, g in zip(params, grads, strict=True)]
        if self.name == "sgd":
            return [p - lr * g for p, g in zip(params, grads, strict=True)], []
        if self.name == "momentum":
            mu = self.hparams["momentum"]
            bufs = [b * mu + g for b, g in zip(state, grads, strict=True)]
            return [p - lr * b for p, b in zip(params, bufs, strict=True)], bufs
        return self._adam(params, grads, state, lr)

    def _adam(
        self, params: Tensors, grads: Tensors, state: Tensors, lr: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b1, b2, eps = self.hparams["beta1"], self.hparams["beta2"], self.hparams["eps"]
        n = len(params)
        step = state[-1] + 1.0
        step_size = lr / (1.0 - torch.pow(b1, step))
        bias2_sqrt = torch.sqrt(1.0 - torch.pow(b2, step))
        ms, vs, new_params = [], [], []
        for p, g, m, v in zip(params, grads, state[:n], state[n : 2 * n], strict=True):
            m = m + (1.0 - b1) * (g - m)  # torch.lerp with weight < 0.5
            v = v * b2 + (1.0 - b2) * g * g
            new_params.append(p - step_size * (m / (torch.sqrt(v) / bias2_sqrt + eps)))
            ms.append(m)
            vs.append(v)
        return new_params, [*ms, *vs, step]

    def parity_lr(self, lr: float) -> float:
        """The learning rate the parity gate trains with, given the model's SGD lr.

        The gate must run where training is stable: otherwise two correct
        implementations drift apart exponentially from one ReLU or max-pool decision
        that float32 rounding tips the other way. Momentum keeps SGD's effective step
        (``lr * (1 - momentum)``); Adam, whose step is ~lr whatever the gradient, uses
        torch's default lr.
        """
        if self.name == "momentum":
            return lr * (1.0 - self.hparams["momentum"])
        return min(lr, 1e-3) if self.name == "adam" else lr

    def reference(
        self, parameters: Iterable[torch.nn.Parameter], lr: float
    ) -> torch.optim.Optimizer:
        """The torch.optim optimizer this graph update reproduces."""
        decay = self.hparams["weight_decay"]
        if self.name == "sgd":
            return torch.optim.SGD(parameters, lr=lr, weight_decay=decay)
        if self.name == "momentum":
            mu = self.hparams["momentum"]
            return torch.optim.SGD(parameters, lr=lr, momentum=mu, weight_decay=decay)
        betas = (self.hparams["beta1"], self.hparams["beta2"])
        return torch.optim.Adam(
            parameters, lr=lr, betas=betas, eps=self.hparams["eps"], weight_decay=decay
        )


def make_optimizer(name: str, hparams: dict[str, float] | None = None) -> GraphOptimizer:
    """Validate ``name`` and ``hparams`` (missing ones take the defaults)."""
    if name not in DEFAULT_HPARAMS:
        raise ExportError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")
    merged = dict(DEFAULT_HPARAMS[name])
    unknown = set(hparams or {}) - set(merged)
    if unknown:
        raise ExportError(
            f"{name} has no hyperparameters {sorted(unknown)}; known: {sorted(merged)}"
        )
    merged.update({k: float(v) for k, v in (hparams or {}).items()})
    if any(v < 0 for v in merged.values()):
        raise ExportError(f"{name} hyperparameters must be >= 0: {merged}")
    return GraphOptimizer(name, merged)
