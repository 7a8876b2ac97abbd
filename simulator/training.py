"""Local training and evaluation of simulated devices with the SDK's ONNX trainer.

:class:`OnnxTrainer` adapts :class:`client_sdk.trainer.Trainer`: the same bundle
graphs a phone runs, one ONNX Runtime session per graph reused for every device, one
thread. The engine only sees the :class:`LocalTrainer` protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from client_sdk.bundle import Bundle
from client_sdk.errors import SdkError
from client_sdk.trainer import Trainer, TrainPlan
from simulator.errors import SimulatorError

__all__ = ["Diverged", "LocalTrainer", "LocalUpdate", "OnnxTrainer", "TrainJob"]

Array = np.ndarray[Any, Any]


class Diverged(SimulatorError):
    """Local training produced a non-finite loss: the global model blew up."""

    code = "diverged"


class LocalUpdate(NamedTuple):
    """A device's update: its tensors, or ``flat`` (one contiguous vector, which the
    aggregator folds in one pass) and ``layout`` (each tensor's ``(start, end, shape)``
    in it), from which :attr:`delta` makes the tensors as views when asked."""

    tensors: list[Array] | None
    num_examples: int
    steps: int
    flat: Array | None = None
    layout: tuple[tuple[int, int, tuple[int, ...]], ...] = ()

    @property
    def delta(self) -> list[Array]:
        """The update's tensors (delta = trained - base parameters)."""
        if self.tensors is not None:
            return self.tensors
        assert self.flat is not None, "an update has tensors or a flat vector"
        flat = self.flat
        return [flat[start:end].reshape(shape) for start, end, shape in self.layout]


class TrainJob(NamedTuple):
    """One device's local training: base parameters, shard, step count and seed."""

    params: Sequence[Array]
    x: Array
    y: Array
    steps: int
    seed: int


class LocalTrainer(Protocol):
    """What the engine needs from a model: sizes, initial parameters, train, evaluate."""

    @property
    def params_bytes(self) -> int:
        """Size of the parameters (and of a delta) on the wire."""
        ...

    @property
    def graph_bytes(self) -> int:
        """Size of the graphs a device downloads once."""
        ...

    def initial_params(self) -> list[Array]: ...

    def train_many(
        self, jobs: Sequence[TrainJob], *, lr: float, batch_size: int, epochs: int
    ) -> list[LocalUpdate]:
        """Each job's update, exactly as the SDK's trainer would compute it alone."""
        ...

    def accuracy(self, params: Sequence[Array], x: Array, y: Array) -> float: ...

    def check_data(self, x: Array, y: Array) -> None:
        """Raise SimulatorError if the model cannot train on such arrays."""
        ...


class OnnxTrainer:
    """:class:`LocalTrainer` over a bundle, through the SDK's :class:`Trainer`.

    :meth:`train` runs the SDK's own loop (:meth:`Trainer.train`: reshuffle every
    epoch with ``default_rng(seed)``, batches in order, stop before step ``steps``)
    but calls :meth:`Trainer.train_step` directly, skipping the per-call validation of
    parameters and data, which costs more than the ONNX step itself at this model size.
    The simulator validates once instead: the aggregator's parameters always match the
    bundle, and :meth:`check_data` checks the shards. The deltas are bit-identical to
    :meth:`Trainer.train`'s (``tests/simulator/test_training.py``).
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        try:
            self._trainer = Trainer(bundle, threads=1)
        except SdkError as exc:
            raise SimulatorError(f"cannot load the model bundle: {exc}") from exc
        self._params_bytes = sum(int(p.nbytes) for p in self.initial_params())
        self._graph_bytes = sum(len(bundle.graph(g)) for g in ("train_step", "eval_step"))

    @property
    def params_bytes(self) -> int:
        return self._params_bytes

    @property
    def graph_bytes(self) -> int:
        return self._graph_bytes

    def initial_params(self) -> list[Array]:
        return [np.array(p, dtype=np.float32) for p in self.bundle.initial_params]

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
        trainer = self._trainer
        rng = np.random.default_rng(seed)
        current, state = list(params), trainer.initial_state()
        n, done, seen = len(x), 0, 0
        try:
            for _ in range(epochs):
                order = rng.permutation(n)
                for start in range(0, n, batch_size):
                    if done >= steps:
                        break
                    idx = order[start : start + batch_size]
                    current, state, loss = trainer.train_step(current, state, x[idx], y[idx], lr)
                    if not math.isfinite(loss):
                        raise Diverged(f"local loss is {loss}: training diverged")
                    done += 1
                    seen += len(idx)
        except SdkError as exc:
            raise SimulatorError(f"local training failed: {exc}") from exc
        delta = [
            np.subtract(new, old, dtype=np.float32)
            for new, old in zip(current, params, strict=True)
        ]
        return LocalUpdate(delta, min(seen, n), done)

    def train_many(
        self, jobs: Sequence[TrainJob], *, lr: float, batch_size: int, epochs: int
    ) -> list[LocalUpdate]:
        return [
            self.train(
                j.params,
                j.x,
                j.y,
                lr=lr,
                batch_size=batch_size,
                epochs=epochs,
                steps=j.steps,
                seed=j.seed,
            )
            for j in jobs
        ]

    def train_reference(
        self, params: Sequence[Array], x: Array, y: Array, plan: TrainPlan, seed: int
    ) -> LocalUpdate:
        """The SDK's :meth:`Trainer.train` itself, to check :meth:`train` against."""
        result = self._trainer.train(params, x, y, plan, seed=seed)
        return LocalUpdate(result.delta, result.num_examples, result.steps)

    def check_data(self, x: Array, y: Array) -> None:
        manifest = self.bundle.manifest
        for array, spec in ((x, manifest.x), (y, manifest.y)):
            if array.dtype.name != spec.dtype or array.shape[1:] != spec.shape[1:]:
                raise SimulatorError(
                    f"shard {spec.name} is {array.dtype.name}{list(array.shape)}, the model "
                    f"{manifest.model} takes {spec.dtype}{list(spec.shape)}"
                )

    def accuracy(self, params: Sequence[Array], x: Array, y: Array) -> float:
        try:
            result = self._trainer.evaluate(params, x, y)
        except SdkError as exc:
            raise SimulatorError(f"evaluation failed: {exc}") from exc
        return float(result.accuracy or 0.0)
