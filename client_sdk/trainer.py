"""Train, evaluate and run a bundle's ONNX graphs with stock ONNX Runtime (never torch).

``train_step.onnx`` maps ``(*params, *optimizer_state, x, y, lr)`` to
``(*new_params, *new_state, loss)``; the trainer feeds it local batches, keeps the
optimizer state (zeros at the start of every :meth:`Trainer.train` call) and returns
the update as ``delta = new - base``. Every ONNX Runtime failure surfaces as a
:class:`TrainingError` (or a :class:`BundleError` when a graph cannot be loaded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from client_sdk.bundle import Array, Bundle, TensorSpec, params_mismatch
from client_sdk.errors import BundleError, TrainingError

_EVAL_OUTPUTS = 3  # loss_sum, correct, count
_INFER_CHUNK = 512


@dataclass(frozen=True)
class TrainPlan:
    """How to train locally: learning rate, batch size and when to stop."""

    lr: float
    batch_size: int
    epochs: int = 1
    max_steps: int | None = None
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.lr) or self.lr < 0:
            raise TrainingError(f"plan lr must be a finite number >= 0, got {self.lr}")
        if self.batch_size < 1 or self.epochs < 1:
            raise TrainingError("plan batch_size and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 0:
            raise TrainingError("plan max_steps must be >= 0")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise TrainingError("plan time_budget_s must be > 0")


@dataclass
class TrainResult:
    """The outcome of local training; ``delta`` is ``new - base`` in float32.

    ``stopped`` is ``"completed"``, ``"max_steps"``, ``"time_budget"`` or ``"aborted"``;
    ``num_examples`` counts distinct examples trained on; ``mean_loss`` is the
    example-weighted mean of the step losses (NaN when no step ran).
    """

    delta: list[Array]
    num_examples: int
    steps: int
    mean_loss: float
    wall_s: float
    stopped: str


@dataclass
class EvalResult:
    """Mean loss, accuracy (None for regression) and the number of examples."""

    loss: float
    accuracy: float | None
    count: int


class Trainer:
    """Runs one bundle's graphs; sessions for evaluation and inference load lazily."""

    def __init__(self, bundle: Bundle, *, threads: int = 1) -> None:
        if threads < 1:
            raise TrainingError(f"threads must be >= 1, got {threads}")
        manifest = bundle.manifest
        self.bundle = bundle
        self._params = manifest.params
        self._state = manifest.optimizer_state
        self._param_names = [s.name for s in manifest.params]
        self._state_names = [s.name for s in manifest.optimizer_state]
        self._options = _session_options(threads)
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._session("train_step")  # fail fast on a graph ORT cannot load

    # -- training -------------------------------------------------------------------

    def initial_state(self) -> list[Array]:
        """Optimizer state at the start of local training: zeros."""
        return [np.zeros(_static(s), dtype=s.dtype) for s in self._state]

    def train_step(
        self,
        params: Sequence[Array],
        state: Sequence[Array],
        x: Array,
        y: Array,
        lr: float,
    ) -> tuple[list[Array], list[Array], float]:
        """Run the train-step graph once: returns (new params, new state, loss)."""
        feeds: dict[str, Any] = dict(zip(self._param_names, params, strict=True))
        feeds.update(zip(self._state_names, state, strict=True))
        feeds["x"] = x
        feeds["y"] = y
        feeds["lr"] = np.asarray(lr, dtype=np.float32)
        out = self._run("train_step", feeds)
        n_params, n_state = len(self._param_names), len(self._state_names)
        return out[:n_params], out[n_params : n_params + n_state], float(out[-1])

    def train(
        self,
        params: Sequence[Array],
        x: Array,
        y: Array,
        plan: TrainPlan,
        *,
        seed: int = 0,
        should_continue: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> TrainResult:
        """Train for ``plan.epochs`` over ``(x, y)``, reshuffled every epoch with ``seed``.

        The stop conditions (``max_steps``, ``time_budget_s``, ``should_continue``) are
        checked between steps; the last batch of an epoch may be smaller.
        """
        x, y = self._check_data(x, y)
        n = len(x)
        if n == 0:
            raise TrainingError("no training examples")
        rng = np.random.default_rng(seed)

        def batches() -> Iterator[tuple[Array, Array]]:
            for _ in range(plan.epochs):
                order = rng.permutation(n)
                for start in range(0, n, plan.batch_size):
                    idx = order[start : start + plan.batch_size]
                    yield x[idx], y[idx]

        return self._loop(params, batches(), plan, should_continue, clock, distinct=n)

    def train_batches(
        self,
        params: Sequence[Array],
        batches: Iterable[tuple[Array, Array]],
        plan: TrainPlan,
        *,
        should_continue: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> TrainResult:
        """One pass over caller-supplied batches (``plan.batch_size``/``epochs`` unused)."""
        checked = (self._check_data(xb, yb) for xb, yb in batches)
        return self._loop(params, checked, plan, should_continue, clock, distinct=None)

    def _loop(
        self,
        params: Sequence[Array],
        batches: Iterable[tuple[Array, Array]],
        plan: TrainPlan,
        should_continue: Callable[[], bool] | None,
        clock: Callable[[], float],
        *,
        distinct: int | None,
    ) -> TrainResult:
        base = self._check_params(params)
        current, state = list(base), self.initial_state()
        start = clock()
        steps = seen = 0
        loss_sum = 0.0
        stopped = "completed"
        for xb, yb in batches:
            if plan.max_steps is not None and steps >= plan.max_steps:
                stopped = "max_steps"
                break
            if plan.time_budget_s is not None and clock() - start >= plan.time_budget_s:
                stopped = "time_budget"
                break
            if should_continue is not None and not should_continue():
                stopped = "aborted"
                break
            current, state, loss = self.train_step(current, state, xb, yb, plan.lr)
            if not math.isfinite(loss):
                raise TrainingError(f"loss is {loss} at step {steps + 1}: training diverged")
            steps += 1
            seen += len(xb)
            loss_sum += loss * len(xb)
        delta = [
            np.subtract(new, old, dtype=np.float32) for new, old in zip(current, base, strict=True)
        ]
        return TrainResult(
            delta=delta,
            num_examples=seen if distinct is None else min(seen, distinct),
            steps=steps,
            mean_loss=loss_sum / seen if seen else math.nan,
            wall_s=clock() - start,
            stopped=stopped,
        )

    # -- evaluation and inference ----------------------------------------------------

    def evaluate(
        self, params: Sequence[Array], x: Array, y: Array, *, batch_size: int = 512
    ) -> EvalResult:
        """Mean loss and accuracy of ``params`` over ``(x, y)`` with the eval-step graph."""
        checked = self._check_params(params)
        x, y = self._check_data(x, y)
        if len(x) == 0:
            raise TrainingError("no evaluation examples")
        feeds: dict[str, Any] = dict(zip(self._param_names, checked, strict=True))
        loss_sum, correct, count = 0.0, 0, 0
        for start in range(0, len(x), max(1, batch_size)):
            feeds["x"] = x[start : start + batch_size]
            feeds["y"] = y[start : start + batch_size]
            out = self._run("eval_step", feeds)
            loss_sum += float(out[0])
            correct += int(out[1])
            count += int(out[2])
        regression = self.bundle.manifest.task_type == "regression"
        return EvalResult(
            loss=loss_sum / count, accuracy=None if regression else correct / count, count=count
        )

    def infer(self, params: Sequence[Array], x: Array) -> Array:
        """Model outputs (logits for classification/binary) for every row of ``x``."""
        checked = self._check_params(params)
        x = self._check_array(x, self.bundle.manifest.x)
        if len(x) == 0:
            raise TrainingError("no rows to run inference on")
        feeds: dict[str, Any] = dict(zip(self._param_names, checked, strict=True))
        outputs = []
        for start in range(0, len(x), _INFER_CHUNK):
            feeds["x"] = x[start : start + _INFER_CHUNK]
            outputs.append(self._run("infer", feeds)[0])
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    # -- plumbing ---------------------------------------------------------------------

    def _check_params(self, params: Sequence[Array]) -> list[Array]:
        arrays = [np.ascontiguousarray(p) for p in params]
        problem = params_mismatch(arrays, self._params)
        if problem is not None:
            raise TrainingError(f"parameters do not match the bundle: {problem}")
        return arrays

    def _check_data(self, x: Array, y: Array) -> tuple[Array, Array]:
        manifest = self.bundle.manifest
        x = self._check_array(x, manifest.x)
        y = self._check_array(y, manifest.y)
        if len(x) != len(y):
            raise TrainingError(f"x has {len(x)} rows but y has {len(y)}")
        return x, y

    @staticmethod
    def _check_array(array: Array, spec: TensorSpec) -> Array:
        array = np.asarray(array)
        if array.dtype.name != spec.dtype:
            if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                raise TrainingError(f"{spec.name} must be {spec.dtype}, got {array.dtype.name}")
            array = array.astype(spec.dtype)
        if array.ndim != len(spec.shape) or array.shape[1:] != spec.shape[1:]:
            raise TrainingError(
                f"{spec.name} must have shape {['batch', *spec.shape[1:]]}, got {list(array.shape)}"
            )
        return np.ascontiguousarray(array)

    def _session(self, name: str) -> ort.InferenceSession:
        session = self._sessions.get(name)
        if session is None:
            try:
                session = ort.InferenceSession(
                    self.bundle.graph(name), self._options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own pybind exception types
                raise BundleError(f"ONNX Runtime cannot load {name}.onnx: {exc}") from exc
            _check_io(name, session, self._expected_inputs(name), self._expected_outputs(name))
            self._sessions[name] = session
        return session

    def _expected_inputs(self, name: str) -> list[str]:
        tail = {"train_step": ["x", "y", "lr"], "eval_step": ["x", "y"], "infer": ["x"]}[name]
        state = self._state_names if name == "train_step" else []
        return [*self._param_names, *state, *tail]

    def _expected_outputs(self, name: str) -> int:
        if name == "train_step":
            return len(self._param_names) + len(self._state_names) + 1
        return _EVAL_OUTPUTS if name == "eval_step" else 1

    def _run(self, name: str, feeds: dict[str, Any]) -> list[Array]:
        session = self._session(name)
        try:
            outputs: list[Array] = session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise TrainingError(f"ONNX Runtime failed in {name}: {exc}") from exc
        return outputs


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only; warnings go nowhere useful on a device
    # Busy-waiting worker threads burn battery between steps on a phone.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _check_io(name: str, session: ort.InferenceSession, inputs: list[str], n_outputs: int) -> None:
    got = [i.name for i in session.get_inputs()]
    if got != inputs:
        raise BundleError(f"{name}.onnx inputs {got} do not match the manifest: {inputs}")
    if len(session.get_outputs()) != n_outputs:
        raise BundleError(
            f"{name}.onnx has {len(session.get_outputs())} outputs, expected {n_outputs}"
        )


def _static(spec: TensorSpec) -> tuple[int, ...]:
    return tuple(d for d in spec.shape if d is not None)
