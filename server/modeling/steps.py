"""The pure functions traced into the three graphs of a bundle.

- ``train_step(*params, *state, x, y, lr) -> (*new_params, *new_state, loss)``, loss
  with reduction mean, gradients by ``torch.func.grad_and_value``;
- ``eval_step(*params, x, y) -> (loss_sum, correct, count)``;
- ``infer(*params, x) -> output``.

Losses by task type: cross-entropy (classification, correct = argmax == y), BCE with
logits (binary, correct = (logit > 0) == y) and MSE (regression, correct = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value

from server.modeling.optimizers import GraphOptimizer

Step = Callable[..., tuple[torch.Tensor, ...]]


def train_loss(task_type: str, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of a batch, as torch eager computes it for the reference run."""
    if task_type == "classification":
        return F.cross_entropy(output, y)
    if task_type == "binary":
        return F.binary_cross_entropy_with_logits(output.reshape(y.shape), y)
    return F.mse_loss(output.reshape(y.shape), y)


def eval_metrics(
    task_type: str, output: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss summed over examples, number correct, number of examples)."""
    count = torch.ones(y.shape[0], dtype=torch.int64).sum()
    if task_type == "classification":
        loss_sum = F.cross_entropy(output, y, reduction="sum")
        return loss_sum, (output.argmax(1) == y).sum(), count
    output = output.reshape(y.shape)
    if task_type == "binary":
        loss_sum = F.binary_cross_entropy_with_logits(output, y, reduction="sum")
        return loss_sum, ((output > 0) == (y > 0.5)).sum(), count
    per_example = ((output - y) ** 2).reshape(y.shape[0], -1).mean(1)
    return per_example.sum(), torch.zeros((), dtype=torch.int64), count


def make_train_step(
    module: nn.Module, names: Sequence[str], task_type: str, optimizer: GraphOptimizer, n_state: int
) -> Step:
    n_params = len(names)

    def train_step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = args[:n_params]
        state = args[n_params : n_params + n_state]
        x, y, lr = args[n_params + n_state :]

        def loss_of(ps: tuple[torch.Tensor, ...]) -> torch.Tensor:
            return train_loss(
                task_type, functional_call(module, dict(zip(names, ps, strict=True)), (x,)), y
            )

        grads, loss = grad_and_value(loss_of)(tuple(params))
        new_params, new_state = optimizer.update(params, grads, state, lr)
        return (*new_params, *new_state, loss)

    return train_step


def make_eval_step(module: nn.Module, names: Sequence[str], task_type: str) -> Step:
    n_params = len(names)

    def eval_step(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params, (x, y) = args[:n_params], args[n_params:]
        output = functional_call(module, dict(zip(names, params, strict=True)), (x,))
        return eval_metrics(task_type, output, y)

    return eval_step


def make_infer(module: nn.Module, names: Sequence[str]) -> Step:
    n_params = len(names)

    def infer(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params, x = args[:n_params], args[n_params]
        return (functional_call(module, dict(zip(names, params, strict=True)), (x,)),)

    return infer
