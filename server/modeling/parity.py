"""The parity gate: exported graphs must reproduce torch eager before they are published.

Both sides start from the same weights and train on the same batches (the last one
smaller than the rest): ONNX Runtime through the SDK's :class:`Trainer`, torch through
``model(x)``, the loss, ``backward()`` and the real ``torch.optim`` optimizer. The gate
then compares every parameter and every step's loss, and, at ONNX Runtime's final
weights, the inference outputs and the eval step's loss and counts. Anything beyond
the tolerance raises :class:`ParityError`.

Adam is compared step by step instead ("teacher forcing"): its update
``m / (sqrt(v) + eps)`` turns a 1e-9 rounding difference in a gradient near ``eps`` into
a visible weight difference, so two correct implementations drift apart over a run.
Torch therefore restarts every step from ONNX Runtime's weights and moments; the new
moments (which carry the gradients) must agree relative to their largest entry within
``STATE_RTOL_FACTOR * tolerance`` (float32 gradients of a conv weight sum ~10^4 terms and
``v`` squares them: ~1e-4 relative between two correct implementations, while a wrong
gradient or formula is off by O(1)), and the new weights must follow torch's Adam
formula from the graph's own moments within ``tolerance``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from client_sdk.bundle import Bundle
from client_sdk.errors import SdkError
from client_sdk.trainer import Trainer
from server.modeling.datasets import load_dataset
from server.modeling.errors import ParityError
from server.modeling.optimizers import GraphOptimizer
from server.modeling.steps import eval_metrics, train_loss
from server.modeling.zoo import ZooEntry

Array = np.ndarray[Any, Any]

STATE_RTOL_FACTOR = 100.0
Batch = tuple[Array, Array]


@dataclass(frozen=True)
class ParityReport:
    steps: int
    max_param_diff: float
    max_loss_diff: float
    max_output_diff: float
    eval_loss_diff: float
    max_state_diff: float = 0.0  # relative; Adam only

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class _Run:
    """What one side-by-side run produced."""

    params: list[Array]  # ONNX Runtime's final weights
    ort_losses: list[float]
    torch_losses: list[float]
    max_param_diff: float
    max_state_diff: float = 0.0


def parity_batches(entry: ZooEntry, steps: int, batch_size: int = 32, seed: int = 0) -> list[Batch]:
    """``steps`` batches from the entry's dataset; the last one is a third smaller."""
    x, y = _data(entry, seed)
    sizes = [batch_size] * (steps - 1) + [max(1, batch_size - batch_size // 3)]
    order = np.random.default_rng(seed).permutation(len(x))
    rows = np.resize(order, sum(sizes))  # cycles through the data if it is short
    bounds = np.cumsum([0, *sizes])
    return [(x[rows[a:b]], y[rows[a:b]]) for a, b in itertools.pairwise(bounds)]


def check_parity(
    bundle: Bundle,
    factory: Callable[[], nn.Module],
    optimizer: GraphOptimizer,
    batches: Sequence[Batch],
    *,
    lr: float,
    tolerance: float,
) -> ParityReport:
    """Train both sides over ``batches``; raise ParityError beyond ``tolerance``."""
    task_type = bundle.manifest.task_type
    model = factory()
    _load(model, bundle.initial_params)
    try:
        trainer = Trainer(bundle)
        side_by_side = _teacher_forced if optimizer.name == "adam" else _trajectories
        run = side_by_side(trainer, model, optimizer, batches, lr, task_type)
        x_eval, y_eval = _eval_rows(batches)
        ort_out = trainer.infer(run.params, x_eval)
        ort_eval = trainer.evaluate(run.params, x_eval, y_eval)
    except SdkError as exc:
        raise ParityError(f"the exported graphs do not run in ONNX Runtime: {exc}") from exc
    _load(model, run.params)  # forward passes are compared at the same weights
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x_eval))
        loss_sum, _, count = eval_metrics(task_type, torch_out, torch.from_numpy(y_eval))
    report = ParityReport(
        steps=len(batches),
        max_param_diff=run.max_param_diff,
        max_loss_diff=max(
            abs(a - b) for a, b in zip(run.ort_losses, run.torch_losses, strict=True)
        ),
        max_output_diff=_max_abs(ort_out, torch_out.numpy()),
        eval_loss_diff=abs(ort_eval.loss - float(loss_sum) / int(count)),
        max_state_diff=run.max_state_diff,
    )
    _enforce(report, task_type, ort_eval.accuracy, ort_out, y_eval, tolerance, run.torch_losses)
    return report


def _trajectories(
    trainer: Trainer,
    model: nn.Module,
    optimizer: GraphOptimizer,
    batches: Sequence[Batch],
    lr: float,
    task_type: str,
) -> _Run:
    """Both sides train independently from the same start; compare where they end."""
    params, state = list(trainer.bundle.initial_params), trainer.initial_state()
    ort_losses = []
    for x, y in batches:
        params, state, loss = trainer.train_step(params, state, x, y, lr)
        ort_losses.append(loss)
    torch_opt = optimizer.reference(model.parameters(), lr)
    torch_losses = []
    for x, y in batches:
        torch_opt.zero_grad()
        torch_losses.append(_backward(model, task_type, x, y))
        torch_opt.step()
    ends = zip(params, model.parameters(), strict=True)
    return _Run(
        params,
        ort_losses,
        torch_losses,
        max(_max_abs(a, b.detach().numpy()) for a, b in ends),
    )


def _teacher_forced(
    trainer: Trainer,
    model: nn.Module,
    optimizer: GraphOptimizer,
    batches: Sequence[Batch],
    lr: float,
    task_type: str,
) -> _Run:
    """Adam: torch restarts each step from ONNX Runtime's weights and moments."""
    hp = optimizer.hparams
    n = len(trainer.bundle.initial_params)
    params, state = list(trainer.bundle.initial_params), trainer.initial_state()
    run = _Run(params, [], [], 0.0)
    for x, y in batches:
        new_params, new_state, loss = trainer.train_step(params, state, x, y, lr)
        _load(model, params)
        torch_opt = optimizer.reference(model.parameters(), lr)
        for param, m, v in zip(model.parameters(), state[:n], state[n : 2 * n], strict=True):
            torch_opt.state[param] = {
                "step": torch.tensor(float(state[-1])),
                "exp_avg": torch.from_numpy(np.array(m)),
                "exp_avg_sq": torch.from_numpy(np.array(v)),
            }
        run.torch_losses.append(_backward(model, task_type, x, y))
        torch_opt.step()
        moments = [
            (torch_opt.state[p]["exp_avg"], torch_opt.state[p]["exp_avg_sq"])
            for p in model.parameters()
        ]
        for i, (m, v) in enumerate(moments):
            run.max_state_diff = max(
                run.max_state_diff,
                _relative(new_state[i], m.numpy()),
                _relative(new_state[n + i], v.numpy()),
            )
        step = float(new_state[-1])
        for p, new, m, v in zip(
            params, new_params, new_state[:n], new_state[n : 2 * n], strict=True
        ):
            expected = _adam_formula(p, m, v, step, lr, hp)
            run.max_param_diff = max(run.max_param_diff, _max_abs(new, expected))
        run.ort_losses.append(loss)
        params, state = new_params, new_state
    run.params = params
    return run


def _adam_formula(
    p: Array, m: Array, v: Array, step: float, lr: float, hp: dict[str, float]
) -> Array:
    """torch.optim.Adam's weight update from given new moments, in float64."""
    m64, v64 = np.asarray(m, np.float64), np.asarray(v, np.float64)
    bias1, bias2 = 1 - hp["beta1"] ** step, 1 - hp["beta2"] ** step
    denom = np.sqrt(v64) / np.sqrt(bias2) + hp["eps"]
    out: Array = np.asarray(p, np.float64) - lr / bias1 * m64 / denom
    return out


def _backward(model: nn.Module, task_type: str, x: Array, y: Array) -> float:
    loss = train_loss(task_type, model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()  # type: ignore[no-untyped-call]
    return float(loss.detach())


def _load(model: nn.Module, values: Sequence[Array]) -> None:
    with torch.no_grad():
        for p, value in zip(model.parameters(), values, strict=True):
            p.copy_(torch.from_numpy(np.array(value)))
            p.grad = None


def _relative(a: Array, b: Array) -> float:
    """Largest difference relative to the largest entry of ``b``."""
    scale = float(np.abs(b).max()) if b.size else 0.0
    return _max_abs(a, b) / scale if scale > 0 else _max_abs(a, b)


def _enforce(
    report: ParityReport,
    task_type: str,
    accuracy: float | None,
    outputs: Array,
    labels: Array,
    tolerance: float,
    torch_losses: Sequence[float],
) -> None:
    loss_scale = max(1.0, *(abs(v) for v in torch_losses))
    out_scale = max(1.0, float(np.abs(outputs).max()))
    failures = []
    if not report.max_param_diff <= tolerance:
        failures.append(f"parameters differ by {report.max_param_diff:.3g}")
    if not report.max_state_diff <= STATE_RTOL_FACTOR * tolerance:
        failures.append(f"optimizer states differ by {report.max_state_diff:.3g} (relative)")
    if not report.max_loss_diff <= tolerance * loss_scale:
        failures.append(f"step losses differ by {report.max_loss_diff:.3g}")
    if not report.max_output_diff <= tolerance * out_scale:
        failures.append(f"inference outputs differ by {report.max_output_diff:.3g}")
    if not report.eval_loss_diff <= tolerance * loss_scale:
        failures.append(f"eval loss differs by {report.eval_loss_diff:.3g}")
    expected = _accuracy(task_type, outputs, labels)
    if expected is not None and (accuracy is None or not math.isclose(accuracy, expected)):
        failures.append(f"eval accuracy {accuracy} != {expected} from the inference outputs")
    if failures:
        only_params = len(failures) == 1 and failures[0].startswith("parameters")
        drift = only_params and report.max_param_diff < 100 * tolerance
        hint = (
            " (only a small weight drift: a ReLU or max-pool decision that float32 "
            "rounding tips differently compounds over long runs; compare fewer "
            "--parity-steps before trusting a larger --tolerance)"
            if drift
            else ""
        )
        raise ParityError(
            f"ONNX graphs disagree with torch eager after {report.steps} steps "
            f"(tolerance {tolerance:g}): {'; '.join(failures)}; refusing to publish{hint}",
            details=report.to_dict(),
        )


def _accuracy(task_type: str, outputs: Array, labels: Array) -> float | None:
    if task_type == "classification":
        return float(np.mean(outputs.argmax(1) == labels))
    if task_type == "binary":
        return float(np.mean((outputs.reshape(labels.shape) > 0) == (labels > 0.5)))
    return None


def _max_abs(a: Array, b: Array) -> float:
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff.max()) if diff.size else 0.0


def _eval_rows(batches: Sequence[Batch]) -> Batch:
    xs, ys = zip(*batches[:4], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _data(entry: ZooEntry, seed: int) -> Batch:
    if entry.dataset is not None:
        x, y, _, _ = load_dataset(entry.dataset)
        return x, y
    # no dataset: resample the example rows, jittering float inputs so batches differ
    rng = np.random.default_rng(seed)
    x, y = entry.example_batch
    rows = rng.integers(0, len(x), 512)
    x, y = x[rows], y[rows]
    if x.dtype.kind == "f":
        x = (x + rng.normal(0.0, 0.1, x.shape)).astype(x.dtype)
    return x, y
