"""Local training of many devices at once, in numpy, for dense ReLU networks.

The ONNX path (:class:`~simulator.training.OnnxTrainer`) costs one ONNX Runtime call
per local step and device; at 9.6k parameters that call overhead, not arithmetic, is
what limits a simulation. :class:`DenseBatchTrainer` runs the *same* computation for
many devices in a few matrix products (a first step shares one product per model
version over all its devices' examples; only weight gradients, and steps past the first,
are per-device stacked products): the zoo's Linear(-ReLU-Linear)
models (``logreg``, ``mlp`` and the Synthetic ones) with mean cross-entropy and plain
SGD, each device with its own parameters, shard, shuffling (``default_rng(seed)``, as
the SDK's :meth:`~client_sdk.trainer.Trainer.train`) and number of steps. It refuses
any other bundle. Evaluation always uses the ONNX graphs.

The gate: the first time a run trains with a (client lr, batch size, epochs) it has not
seen, :func:`verify` compares the batched updates with the SDK's own
:meth:`~client_sdk.trainer.Trainer.train` on that call's real shards and base
parameters, on the same shards from perturbed parameters, on shards merged into
multi-step ones and on budgets cut short. The tolerance is relative (``|fast - sdk| /
|sdk|`` over the whole update, :data:`RTOL`), so it means the same at every parameter
and learning-rate scale; float32 summation order alone gives ~1e-7..1e-5. A
configuration that fails the gate is trained through the ``Trainer`` path for the rest
of the run (slower; said on stderr), never wrong. ``tests/simulator/test_training.py``.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.errors import SdkError
from client_sdk.trainer import TrainPlan
from server.aggregation.blas import sq_norm
from simulator.errors import SimulatorError
from simulator.speed import TrainerStats, plain_matmul_seconds
from simulator.training import Diverged, LocalUpdate, OnnxTrainer, TrainJob

__all__ = [
    "RTOL",
    "DenseBatchTrainer",
    "GateFailed",
    "GateResult",
    "TrainJob",
    "gate_jobs",
    "relative_difference",
    "supports",
    "verify",
]

Array = np.ndarray[Any, Any]

# zoo models that are Linear layers with ReLU between them (torch layout: W is [out, in])
DENSE_MODELS: frozenset[str] = frozenset({"logreg", "mlp", "synthetic-logreg", "synthetic-mlp"})
_F32 = np.float32
_ARANGE = np.arange(4096)
_MIN_GROUP = 48
# |batched - Trainer.train| / |Trainer.train| over a whole update. Measured on digits
# shards (lr 0.1-100, batch 8-32, 1-5 epochs): 2e-7..2e-5 mostly, up to 5e-4 over 30+
# steps where float32 rounding flips a ReLU; a wrong step (lr, order, batch) is O(1).
RTOL = 1e-3
_SAMPLE_EVERY = 16  # batched calls per plain-matmul baseline sample (~1.5% of the run)
_GATE_JOBS = 12  # jobs of the gated call reused as the gate's shards
_PERTURB = 0.5  # perturbed parameters: + N(0, (0.5 x the tensor's std + 0.01)**2)

Config = tuple[float, int, int]  # (lr, batch size, epochs)


@dataclass(frozen=True)
class GateResult:
    """One configuration's check: the worst relative difference over ``jobs`` updates
    and the path the run uses for it (``batched`` or ``trainer``)."""

    lr: float
    batch_size: int
    epochs: int
    rel_diff: float
    jobs: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "rel_diff": self.rel_diff,
            "jobs": self.jobs,
            "path": self.path,
        }


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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

    def __init__(
        self, onnx: OnnxTrainer, *, rtol: float = RTOL, notify: Callable[[str], None] = _stderr
    ) -> None:
        problem = supports(onnx)
        if problem is not None:
            raise SimulatorError(f"batched training unavailable: {problem}")
        self.onnx = onnx
        self.layers = len(onnx.bundle.manifest.params) // 2
        self.classes = len(onnx.initial_params()[-1])  # the last bias: one per class
        self.rtol = rtol
        self.notify = notify
        self.gate: dict[Config, GateResult] = {}
        # What the batched steps cost (matmul FLOPs, seconds in batched calls) and, for
        # every _SAMPLE_EVERY-th call, a plain float32 np.matmul with the FLOPs of that
        # call's heaviest product, timed right after it: the baseline sees the machine as
        # the run did.
        self.flops = 0.0
        self.seconds = 0.0
        self.matmul_flops = 0.0
        self.matmul_s = 0.0
        self._calls = 0
        self._heaviest = (0, 0, 0, 0)  # (stack, m, k, n) of this call's largest matmul
        shapes = [p.shape for p in onnx.initial_params()]
        ends = np.cumsum([math.prod(shape) for shape in shapes]).tolist()
        self._layout = tuple(
            (e - math.prod(s), e, tuple(s)) for e, s in zip(ends, shapes, strict=True)
        )
        self._size = ends[-1]
        self._workspace = np.empty((0, self._size), dtype=_F32)

    def fresh(self) -> DenseBatchTrainer:
        """A trainer on the same graphs with a gate and counters of its own (one per
        unit of an experiment, :mod:`simulator.parallel`)."""
        return DenseBatchTrainer(self.onnx, rtol=self.rtol, notify=self.notify)

    def stats(self) -> TrainerStats:
        """The gate's results and the speed counters so far."""
        return TrainerStats(
            self.flops, self.seconds, self.matmul_flops, self.matmul_s, dict(self.gate)
        )

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
        """Each job's update, as if trained alone by the SDK's trainer (batched once the
        configuration passed the gate, through the ``Trainer`` path if it failed)."""
        config = (float(lr), int(batch_size), int(epochs))
        result = self.gate.get(config)
        if result is None and jobs:
            result = self._check(config, jobs)
        if result is not None and result.path == "trainer":
            return self.onnx.train_many(jobs, lr=lr, batch_size=batch_size, epochs=epochs)
        self._heaviest = (0, 0, 0, 0)
        started = time.perf_counter()
        try:
            return self.batched_many(jobs, lr=lr, batch_size=batch_size, epochs=epochs)
        finally:
            self.seconds += time.perf_counter() - started
            self._calls += 1
            if self._calls % _SAMPLE_EVERY == 1 and self._heaviest[0]:
                g, m, k, n = self._heaviest
                self.matmul_s += plain_matmul_seconds(g, m, k, n)
                self.matmul_flops += 2.0 * g * m * k * n

    def _check(self, config: Config, jobs: Sequence[TrainJob]) -> GateResult:
        lr, batch_size, epochs = config
        probe = gate_jobs(jobs[:_GATE_JOBS], batch_size, epochs)
        try:
            worst = verify(self, probe, lr=lr, batch_size=batch_size, epochs=epochs, rtol=self.rtol)
            path = "batched"
        except GateFailed as exc:
            worst, path = exc.worst, "trainer"
            self.notify(
                f"batched training at client lr {lr:g}, batch {batch_size}, {epochs} epoch(s) "
                f"differs from Trainer.train by {worst:.2g} (relative; the gate allows "
                f"{self.rtol:g}): this configuration trains through the SDK Trainer path (slower)"
            )
        result = GateResult(lr, batch_size, epochs, worst, len(probe), path)
        self.gate[config] = result
        return result

    def batched_many(
        self, jobs: Sequence[TrainJob], *, lr: float, batch_size: int, epochs: int
    ) -> list[LocalUpdate]:
        """:meth:`train_many` on the batched path, ungated."""
        plans = [_batches(len(j.x), batch_size, epochs, j.steps, j.seed) for j in jobs]
        # Jobs of one model version share their base parameter list: stack each distinct
        # list once (a simulation's call holds a few versions).
        slot: dict[int, int] = {}
        distinct: list[Sequence[Array]] = []
        versions: list[int] = []
        for job in jobs:
            v = slot.get(id(job.params))
            if v is None:
                v = slot[id(job.params)] = len(distinct)
                distinct.append(job.params)
            versions.append(v)
        table = [np.stack([p[t] for p in distinct]) for t in range(2 * self.layers)]
        # Sorted by first batch size, devices padded to the same width sit side by side,
        # so each width group of a step is a slice (a view, no copy) of the deltas; in a
        # group of the first step, the devices of one version are a run.
        by_width = sorted(range(len(jobs)), key=lambda i: len(plans[i][0]) if plans[i] else 0)
        idle = [i for i in by_width if not plans[i]]
        busy = [i for i in by_width if plans[i]]
        order = list(idle)
        first_groups = []
        for group in _width_groups(busy, [len(plans[i][0]) for i in busy]):
            first_groups.append((len(order), len(order) + len(group)))
            order += sorted(group, key=versions.__getitem__)
        jobs = [jobs[i] for i in order]
        plans = [plans[i] for i in order]
        version = np.asarray([versions[i] for i in order], dtype=np.intp)
        # The updates themselves are the state: step 0 trains from the base parameters
        # and writes delta = -lr * g; a later step trains from base + delta of its rows
        # only (few devices run more than one step), so no full copy of the stacks is made.
        # One row per device holding its whole update (the tensors in the model's order),
        # so the server folds it in one pass; deltas[t] are strided views of tensor t.
        arena = self._arena(len(jobs))
        deltas = []
        offset = 0
        for t in table:
            size = math.prod(t.shape[1:])
            deltas.append(arena[:, offset : offset + size].reshape(len(jobs), *t.shape[1:]))
            offset += size
        arena[: len(idle)] = 0  # no step, no update
        seen = [len(p[0]) if p else 0 for p in plans]
        neg_lr = _F32(-lr)
        with np.errstate(over="ignore", invalid="ignore"):  # checked below
            for lo, hi in first_groups:
                x, onehot, scale = _pad(
                    [(jobs[i].x, jobs[i].y, plans[i][0]) for i in range(lo, hi)],
                    self.classes,
                    neg_lr,
                )
                runs = _runs(version, lo, hi)
                self._first_step(table, runs, x, onehot, scale, [d[lo:hi] for d in deltas])
            for step in range(1, max((len(p) for p in plans), default=0)):
                active = [i for i, p in enumerate(plans) if len(p) > step]
                for i in active:
                    seen[i] += len(plans[i][step])
                for group in _width_groups(active, [len(plans[i][step]) for i in active]):
                    self._later_step(jobs, plans, step, group, table, version, deltas, neg_lr)
        # One BLAS pass over all the updates; its float32 sum of squares overflows for
        # huge finite values too, which the exact check tells apart.
        if not math.isfinite(sq_norm(arena.reshape(-1))) and not np.isfinite(arena).all():
            raise Diverged("local training produced non-finite parameters: training diverged")
        # Each update leaves in an array of its own (a copy of its row), so the workspace
        # is the same memory every call. Updates live until their sessions arrive, some
        # for minutes of virtual time: handing out views of a fresh block per call made
        # the kernel fault in and zero ~10 pages per update (~20% of the run, measured).
        out: list[LocalUpdate | None] = [None] * len(jobs)
        layout = self._layout
        for i, row in enumerate(arena):
            steps = len(plans[i])
            out[order[i]] = LocalUpdate(
                None, min(seen[i], len(jobs[i].x)), steps, row.copy(), layout
            )
        return [u for u in out if u is not None]

    def _arena(self, rows: int) -> Array:
        """The workspace for a call's updates, ``rows`` x (parameters) float32: one block
        reused by every call (grown when a call needs more rows)."""
        if len(self._workspace) < rows:
            self._workspace = np.empty((rows, self._size), dtype=_F32)
        return self._workspace[:rows]

    def _later_step(
        self,
        jobs: list[TrainJob],
        plans: list[list[Array]],
        step: int,
        group: list[int],
        table: list[Array],
        version: Array,
        deltas: list[Array],
        neg_lr: np.float32,
    ) -> None:
        """A step past the first of ``group``'s devices, each from its own parameters
        (base + delta so far): stacked per-device products, the delta accumulated."""
        x, onehot, scale = _pad(
            [(jobs[i].x, jobs[i].y, plans[i][step]) for i in group], self.classes, neg_lr
        )
        g = len(group)
        width = x.shape[0] // g
        contiguous = group[-1] - group[0] + 1 == g
        rows: slice | list[int] = slice(group[0], group[-1] + 1) if contiguous else group
        params = [t[version[rows]] + d[rows] for t, d in zip(table, deltas, strict=True)]
        steps = [np.empty((g, *t.shape[1:]), dtype=_F32) for t in table]
        self._steps(
            params,
            x.reshape(g, width, -1).transpose(0, 2, 1),
            onehot.reshape(g, width, -1).transpose(0, 2, 1),
            scale.reshape(g, width),
            steps,
        )
        for d, o in zip(deltas, steps, strict=True):
            if contiguous:
                d[rows] += o
            else:
                d[rows] = d[rows] + o

    def _first_step(
        self,
        table: list[Array],
        runs: list[tuple[int, int, int]],
        x: Array,
        onehot: Array,
        scale: Array,
        out: list[Array],
    ) -> None:
        """Step 0 of a group of ``g`` devices trained from their versions' base parameters:
        writes ``-lr x`` the gradient of every tensor into ``out`` (weight, bias, ...).

        Example-major, ``x`` is (g x width, features), device ``i`` in rows ``i x width``
        on (zero-padded). Devices of one version are a run of rows (``runs``: version,
        first and last device + 1), so the forward pass and the gradient through a layer
        are one matrix product per version over all its devices' examples; only the
        weight gradients are per device, one stacked product over strided views.
        """
        layers = self.layers
        g = len(out[0])
        rows, width = x.shape[0], x.shape[0] // g
        acts = [x]  # (rows, features) per layer input
        for k in range(layers):
            w_k, b_k = table[2 * k], table[2 * k + 1]
            out_f, in_f = w_k.shape[1], w_k.shape[2]
            self.flops += 2.0 * rows * in_f * out_f * (3 if k else 2)
            if rows * in_f * out_f > math.prod(self._heaviest):
                # baseline: the whole group's examples through W^T in one product, the
                # fastest shape these FLOPs come in (the stacked per-device weight
                # gradients of the same FLOPs run slower per FLOP in a plain matmul too)
                self._heaviest = (1, rows, in_f, out_f)  # x (rows x in) @ W^T (in x out)
            z = np.empty((rows, out_f), dtype=_F32)
            a = acts[k]
            for v, lo, hi in runs:
                part = z[lo * width : hi * width]
                np.matmul(a[lo * width : hi * width], w_k[v].T, out=part)
                part += b_k[v]
            if k < layers - 1:  # ReLU in place: the activation also gives its mask (> 0)
                acts.append(np.maximum(z, _F32(0), out=z))
        probs = z  # logits, overwritten: (rows, classes)
        probs -= probs.max(axis=1, keepdims=True)
        np.exp(probs, out=probs)
        probs /= probs.sum(axis=1, keepdims=True)
        probs -= onehot
        probs *= scale[:, None]
        grad = probs
        ones = np.ones((1, width), dtype=_F32)
        for k in range(layers - 1, -1, -1):
            g3 = grad.reshape(g, width, -1)
            np.matmul(g3.transpose(0, 2, 1), acts[k].reshape(g, width, -1), out=out[2 * k])
            np.matmul(ones, g3, out=out[2 * k + 1][:, None, :])
            if k:
                w_k = table[2 * k]
                back = np.empty((rows, w_k.shape[2]), dtype=_F32)
                for v, lo, hi in runs:
                    np.matmul(
                        grad[lo * width : hi * width], w_k[v], out=back[lo * width : hi * width]
                    )
                back *= acts[k] > 0
                grad = back

    def _steps(
        self, params: list[Array], x_t: Array, onehot: Array, scale: Array, out: list[Array]
    ) -> None:
        """One SGD step of each device's mean cross-entropy over its (masked) batch:
        writes ``-lr x`` the gradient of every tensor into ``out`` (weight, bias, ...).

        Activations are feature-major, (devices, features, batch), ``W @ a`` per device.
        ``scale`` is ``-lr / batch length`` per example (0 on padding), so the backward
        pass yields the deltas directly.
        """
        layers = self.layers
        g, m = x_t.shape[0], x_t.shape[2]
        acts_t = [x_t]  # (g, in, m)
        pre_t: list[Array] = []
        for k in range(layers):
            w, b = params[2 * k], params[2 * k + 1]
            out_f, in_f = w.shape[1], w.shape[2]
            # W @ a, its weight gradient and (k > 0) W^T @ grad: 2 g m in out FLOPs each
            self.flops += 2.0 * g * m * in_f * out_f * (3 if k else 2)
            if g * m * in_f * out_f > math.prod(self._heaviest):
                self._heaviest = (g, out_f, in_f, m)  # W (out x in) @ a (in x m)
            z = np.matmul(w, acts_t[k])
            z += b[:, :, None]
            pre_t.append(z)
            if k < layers - 1:
                acts_t.append(np.maximum(z, _F32(0)))
        logits = pre_t[-1]  # (g, classes, m)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        probs -= onehot
        grad = probs
        grad *= scale[:, None, :]
        ones = np.ones((m, 1), dtype=_F32)
        for k in range(layers - 1, -1, -1):
            np.matmul(grad, acts_t[k].transpose(0, 2, 1), out=out[2 * k])
            np.matmul(grad, ones, out=out[2 * k + 1][:, :, None])  # 10x faster than a sum
            if k:
                grad = np.matmul(params[2 * k].transpose(0, 2, 1), grad)
                grad *= pre_t[k - 1] > 0


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
    """``rows`` split into runs whose batch sizes pad to the same width (as they are
    up to 8, then a multiple of 8: less padding than powers of two); a run of fewer than
    ``_MIN_GROUP`` rows joins the next (wider) one, since a numpy call costs more than
    the padding it saves."""
    groups: list[list[int]] = []
    last = -1
    for row, size in zip(rows, sizes, strict=True):
        width = size if size <= 8 else -(-size // 8) * 8  # padded up to a multiple of 8
        if width != last and (not groups or len(groups[-1]) >= _MIN_GROUP):
            groups.append([])
        last = width
        groups[-1].append(row)
    return groups


def _pad(
    parts: list[tuple[Array, Array, Array]], classes: int, neg_lr: np.float32
) -> tuple[Array, Array, Array]:
    """Per-device batches zero-padded to the longest, example-major (device ``i`` in
    rows ``i x width`` on): inputs (rows, features), one-hot labels (rows, classes) and
    each example's ``-lr / batch length`` (0 on padding). One scatter each for the whole
    group; a full-shard batch is the shard itself, not a copy."""
    lengths = np.fromiter((len(idx) for _, _, idx in parts), dtype=np.int64, count=len(parts))
    n, width, total = len(parts), int(lengths.max()), int(lengths.sum())
    features = parts[0][0].shape[1]
    whole = [len(idx) == len(xs) and idx.base is _ARANGE for xs, _, idx in parts]
    xcat = np.concatenate(
        [xs if w else xs[idx] for (xs, _, idx), w in zip(parts, whole, strict=True)]
    )
    ycat = np.concatenate(
        [ys if w else ys[idx] for (_, ys, idx), w in zip(parts, whole, strict=True)]
    )
    starts = np.cumsum(lengths) - lengths
    rows = np.arange(total) + np.repeat(np.arange(n) * width - starts, lengths)
    x = np.zeros((n * width, features), dtype=_F32)
    x[rows] = xcat
    onehot = np.zeros((n * width, classes), dtype=_F32)
    onehot[rows, ycat] = 1
    scale = np.zeros(n * width, dtype=_F32)
    scale[rows] = np.repeat(neg_lr / lengths.astype(_F32), lengths)
    return x, onehot, scale


def _runs(version: Array, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``(version, first, last + 1)`` of each run of equal versions in ``version[lo:hi]``,
    positions relative to ``lo``."""
    part = version[lo:hi]
    cuts = [0, *(np.flatnonzero(part[1:] != part[:-1]) + 1).tolist(), len(part)]
    return [(int(part[a]), a, b) for a, b in itertools.pairwise(cuts)]


class GateFailed(SimulatorError):
    """The batched path does not match ``Trainer.train`` on a configuration."""

    code = "gate_failed"

    def __init__(self, message: str, worst: float) -> None:
        super().__init__(message)
        self.worst = worst


def gate_jobs(jobs: Sequence[TrainJob], batch_size: int, epochs: int) -> list[TrainJob]:
    """The gate's cases from a run's own jobs: as given (real shards, base parameters,
    step budgets); the same from perturbed parameters; shards merged in threes (several
    batches per epoch, reshuffled each epoch) with the full plan, one step, and half."""
    out = list(jobs)
    rng = np.random.default_rng(len(jobs))
    for j in jobs:
        params = [
            (p + rng.normal(0.0, _PERTURB * float(np.std(p)) + 0.01, p.shape)).astype(_F32)
            for p in j.params
        ]
        out.append(j._replace(params=params))
    for i in range(0, len(jobs) - 2, 3):
        x = np.concatenate([jobs[i + k].x for k in range(3)])
        y = np.concatenate([jobs[i + k].y for k in range(3)])
        full = epochs * -(-len(x) // batch_size)
        for steps in sorted({full, 1, max(1, full // 2)}):
            out.append(TrainJob(jobs[i].params, x, y, steps, jobs[i].seed + 7 * steps))
    return out


def relative_difference(got: Sequence[Array], want: Sequence[Array]) -> float:
    """``|got - want| / |want|`` (Euclidean over all tensors; 0 when both are 0)."""
    num = math.fsum(
        float(np.sum(np.square(a - b, dtype=np.float64))) for a, b in zip(got, want, strict=True)
    )
    den = math.fsum(float(np.sum(np.square(b, dtype=np.float64))) for b in want)
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return math.sqrt(num / den)


def verify(
    batched: DenseBatchTrainer,
    jobs: Sequence[TrainJob],
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    rtol: float = RTOL,
) -> float:
    """The worst :func:`relative_difference` between the batched updates and the SDK's
    :meth:`~client_sdk.trainer.Trainer.train` on ``jobs``; raises :class:`GateFailed`
    above ``rtol``, when the two ran different steps or when either failed (diverged)."""
    try:
        fast = batched.batched_many(jobs, lr=lr, batch_size=batch_size, epochs=epochs)
    except Diverged as exc:
        raise GateFailed(f"the batched path diverged on the gate's jobs: {exc}", math.inf) from exc
    worst = 0.0
    for job, got in zip(jobs, fast, strict=True):
        plan = TrainPlan(lr=lr, batch_size=batch_size, epochs=epochs, max_steps=job.steps)
        try:
            ref = batched.onnx.train_reference(job.params, job.x, job.y, plan, job.seed)
        except SdkError as exc:
            raise GateFailed(f"Trainer.train failed on the gate's jobs: {exc}", math.inf) from exc
        if (got.num_examples, got.steps) != (ref.num_examples, ref.steps):
            raise GateFailed("batched training ran different steps than Trainer.train", math.inf)
        worst = max(worst, relative_difference(got.delta, ref.delta))
    if not worst <= rtol:
        raise GateFailed(
            f"batched training differs from Trainer.train by {worst:.3g} (relative, > {rtol:g})",
            worst,
        )
    return worst
