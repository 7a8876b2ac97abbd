"""Local training of many devices at once, in numpy, for dense ReLU networks.

The ONNX path (:class:`~simulator.training.OnnxTrainer`) costs one ONNX Runtime call
per local step and device; at 9.6k parameters that call overhead, not arithmetic, is
what limits a simulation. :class:`DenseBatchTrainer` runs the *same* computation for
many devices in one set of stacked matrix products: the zoo's Linear(-ReLU-Linear)
models (``logreg``, ``mlp`` and the Synthetic ones) with mean cross-entropy and plain
SGD, each device with its own parameters, shard, shuffling (``default_rng(seed)``, as
the SDK's :meth:`~client_sdk.trainer.Trainer.train`) and number of steps. It refuses
any other bundle, and :func:`verify` compares it against the ONNX trainer on real
shards before a run may use it (float32 rounding differs, ~1e-7; see
``tests/simulator/test_batched.py``). Evaluation always uses the ONNX graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from simulator.errors import SimulatorError
from simulator.training import Diverged, LocalUpdate, OnnxTrainer, TrainJob

__all__ = ["DenseBatchTrainer", "TrainJob", "supports", "verify"]

Array = np.ndarray[Any, Any]

# zoo models that are Linear layers with ReLU between them (torch layout: W is [out, in])
DENSE_MODELS: frozenset[str] = frozenset({"logreg", "mlp", "synthetic-logreg", "synthetic-mlp"})
_F32 = np.float32
_ARANGE = np.arange(4096)
_MIN_GROUP = 48


def supports(trainer: OnnxTrainer) -> str | None:
    """Why the bundle cannot be trained batched, or None when it can."""
    m = trainer.bundle.manifest
    if m.model not in DENSE_MODELS:
        return f"model {m.model!r} is not one of {sorted(DENSE_MODELS)}"
    if m.optimizer != "sgd" or any(m.optimizer_hparams.values()) or m.optimizer_state:
        return f"client optimizer {m.optimizer} {m.optimizer_hparams} is not plain SGD"
    if m.loss != "cross_entropy" or m.x.dtype != "float32" or len(m.x.shape) != 2:
        return f"loss {m.loss} on x {m.x.dtype}{list(m.x.shape)} is not supported"
    shapes = [s.shape for s in m.params]
    if len(shapes) % 2 or not shapes:
        return "parameters are not (weight, bias) pairs"
    width = m.x.shape[1]
    for w, b in zip(shapes[::2], shapes[1::2], strict=True):
        if len(w) != 2 or w[1] != width or b != (w[0],):
            return f"parameters {shapes} do not chain as Linear layers"
        width = w[0]
    return None


class DenseBatchTrainer:
    """A :class:`~simulator.training.LocalTrainer` that trains job lists in one pass."""

    batched = True

    def __init__(self, onnx: OnnxTrainer) -> None:
        problem = supports(onnx)
        if problem is not None:
            raise SimulatorError(f"batched training unavailable: {problem}")
        self.onnx = onnx
        self.layers = len(onnx.bundle.manifest.params) // 2

    @property
    def params_bytes(self) -> int:
        return self.onnx.params_bytes

    @property
    def graph_bytes(self) -> int:
        return self.onnx.graph_bytes

    def initial_params(self) -> list[Array]:
        return self.onnx.initial_params()

    def check_data(self, x: Array, y: Array) -> None:
        self.onnx.check_data(x, y)

    def accuracy(self, params: Sequence[Array], x: Array, y: Array) -> float:
        return self.onnx.accuracy(params, x, y)

    def train(
        self,
        params: Sequence[Array],
        x: Array,
        y: Array,
        *,
        lr: float,
        batch_size: int,
        epochs: int,
        steps: int,
        seed: int,
    ) -> LocalUpdate:
        job = TrainJob(params, x, y, steps, seed)
        return self.train_many([job], lr=lr, batch_size=batch_size, epochs=epochs)[0]

    def train_many(
        self, jobs: Sequence[TrainJob], *, lr: float, batch_size: int, epochs: int
    ) -> list[LocalUpdate]:
        """Each job's update, as if trained alone by the SDK's trainer."""
        plans = [_batches(len(j.x), batch_size, epochs, j.steps, j.seed) for j in jobs]
        # Sorted by first batch size, devices padded to the same width sit side by side,
        # so each width group of a step is a slice (a view, no copy) of the stacks.
        order = sorted(range(len(jobs)), key=lambda i: len(plans[i][0]) if plans[i] else 0)
        jobs = [jobs[i] for i in order]
        plans = [plans[i] for i in order]
        base_w = [np.stack([j.params[2 * k] for j in jobs]) for k in range(self.layers)]
        base_b = [np.stack([j.params[2 * k + 1] for j in jobs]) for k in range(self.layers)]
        weights = [w.copy() for w in base_w]
        biases = [b.copy() for b in base_b]
        seen = [0] * len(jobs)
        lr32 = _F32(lr)
        for step in range(max((len(p) for p in plans), default=0)):
            active = [i for i, p in enumerate(plans) if len(p) > step]
            for i in active:
                seen[i] += len(plans[i][step])
            for group in _width_groups(active, [len(plans[i][step]) for i in active]):
                x, y, mask, count = _pad([(jobs[i].x, jobs[i].y, plans[i][step]) for i in group])
                contiguous = group[-1] - group[0] + 1 == len(group)
                rows: slice | list[int] = slice(group[0], group[-1] + 1) if contiguous else group
                ws = [w[rows] for w in weights]
                bs = [b[rows] for b in biases]
                gw, gb = self._gradients(ws, bs, x, y, mask, count)
                for k in range(self.layers):
                    if contiguous:  # views: update in place
                        ws[k] -= lr32 * gw[k]
                        bs[k] -= lr32 * gb[k]
                    else:
                        weights[k][rows] = ws[k] - lr32 * gw[k]
                        biases[k][rows] = bs[k] - lr32 * gb[k]
        if not all(np.isfinite(w).all() for w in weights):
            raise Diverged("local training produced non-finite parameters: training diverged")
        deltas: list[Array] = []  # new - base, per tensor, for all jobs at once
        for k in range(self.layers):
            deltas += [np.subtract(weights[k], base_w[k]), np.subtract(biases[k], base_b[k])]
        out: list[LocalUpdate | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            delta = [d[i] for d in deltas]
            out[order[i]] = LocalUpdate(delta, min(seen[i], len(job.x)), len(plans[i]))
        return [u for u in out if u is not None]

    def _gradients(
        self, ws: list[Array], bs: list[Array], x: Array, y: Array, mask: Array, count: Array
    ) -> tuple[list[Array], list[Array]]:
        """Gradients of each device's mean cross-entropy over its (masked) batch."""
        acts = [x]
        pre: list[Array] = []
        h = x
        for k in range(self.layers):
            z = np.matmul(h, ws[k].transpose(0, 2, 1))
            z += bs[k][:, None, :]
            pre.append(z)
            h = np.maximum(z, _F32(0)) if k < self.layers - 1 else z
            acts.append(h)
        logits = acts[-1]
        shifted = logits - logits.max(axis=2, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=2, keepdims=True)
        rows, cols = np.nonzero(mask)
        probs[rows, cols, y[rows, cols]] -= _F32(1)
        grad = probs * (mask / count[:, None])[:, :, None]
        gw: list[Array] = [np.empty(0, _F32)] * self.layers
        gb: list[Array] = [np.empty(0, _F32)] * self.layers
        for k in range(self.layers - 1, -1, -1):
            gw[k] = np.matmul(grad.transpose(0, 2, 1), acts[k])
            gb[k] = grad.sum(axis=1)
            if k:
                grad = np.matmul(grad, ws[k])
                grad *= pre[k - 1] > 0
        return gw, gb


def _batches(n: int, batch_size: int, epochs: int, steps: int, seed: int) -> list[Array]:
    """The index batches the SDK's trainer would run (reshuffled every epoch).

    A shard that fits in one batch is trained full-batch at every step whatever the
    shuffle, so its order (which only changes float32 summation order) is not drawn.
    """
    if n <= batch_size:
        return [_ARANGE[:n] if n <= len(_ARANGE) else np.arange(n)] * min(steps, epochs)
    rng = np.random.default_rng(seed)
    out: list[Array] = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if len(out) >= steps:
                return out
            out.append(order[start : start + batch_size])
    return out


def _width_groups(rows: list[int], sizes: list[int]) -> list[list[int]]:
    """``rows`` split into runs whose batch sizes round up to the same power of two;
    a run of fewer than ``_MIN_GROUP`` rows joins the next (wider) one, since a numpy
    call costs more than the padding it saves."""
    groups: list[list[int]] = []
    last = -1
    for row, size in zip(rows, sizes, strict=True):
        width = 1 << max(0, size - 1).bit_length()
        if width != last and (not groups or len(groups[-1]) >= _MIN_GROUP):
            groups.append([])
        last = width
        groups[-1].append(row)
    return groups


def _pad(parts: list[tuple[Array, Array, Array]]) -> tuple[Array, Array, Array, Array]:
    """Stack per-device batches, zero-padded to the longest, with a validity mask."""
    width = max(len(idx) for _, _, idx in parts)
    features = parts[0][0].shape[1]
    x = np.zeros((len(parts), width, features), dtype=_F32)
    y = np.zeros((len(parts), width), dtype=np.int64)
    mask = np.zeros((len(parts), width), dtype=_F32)
    count = np.empty(len(parts), dtype=_F32)
    for i, (xs, ys, idx) in enumerate(parts):
        k = len(idx)
        x[i, :k] = xs[idx]
        y[i, :k] = ys[idx]
        mask[i, :k] = 1
        count[i] = k
    return x, y, mask, count


def verify(
    batched: DenseBatchTrainer,
    jobs: Sequence[TrainJob],
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    tolerance: float = 1e-5,
) -> float:
    """Max |delta difference| between the batched and the ONNX trainer on ``jobs``;
    raises SimulatorError above ``tolerance``."""
    fast = batched.train_many(jobs, lr=lr, batch_size=batch_size, epochs=epochs)
    worst = 0.0
    for job, got in zip(jobs, fast, strict=True):
        ref = batched.onnx.train(
            job.params,
            job.x,
            job.y,
            lr=lr,
            batch_size=batch_size,
            epochs=epochs,
            steps=job.steps,
            seed=job.seed,
        )
        if (got.num_examples, got.steps) != (ref.num_examples, ref.steps):
            raise SimulatorError("batched training ran different steps than the ONNX trainer")
        for a, b in zip(got.delta, ref.delta, strict=True):
            worst = max(worst, float(np.max(np.abs(a - b))))
    if worst > tolerance:
        raise SimulatorError(
            f"batched training differs from the ONNX trainer by {worst:.3g} (> {tolerance:g})"
        )
    return worst
