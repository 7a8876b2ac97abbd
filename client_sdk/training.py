"""Local training and evaluation over a data source, off the event loop.

Training follows the server's plan (lr, batch size, epochs, max steps) within a time
budget the client derives from the plan and the session deadline. Between steps it
asks a guard whether the device is still eligible; the first "no" stops it, and the
caller uploads nothing. Cancelling the awaiting task stops the worker thread at the
next step too.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from client_sdk.data import Array, Batch, DataSource
from client_sdk.errors import ConfigError
from client_sdk.events import Emitter
from client_sdk.trainer import Trainer, TrainPlan, TrainResult

Guard = Callable[[], tuple[str, ...]]


@dataclass(frozen=True)
class LocalRun:
    """The trainer's result, and why it was stopped early if the device turned ineligible."""

    result: TrainResult
    ineligible: tuple[str, ...] = ()


def plan_from(plan: Mapping[str, Any], budget_s: float) -> TrainPlan:
    """The server's plan as a :class:`TrainPlan`, its time budget capped at ``budget_s``."""
    try:
        lr = float(plan["lr"])
        batch_size = int(plan["batch_size"])
        epochs = int(plan.get("epochs") or 1)
        raw_steps, raw_budget = plan.get("max_steps"), plan.get("time_budget_s")
        max_steps = None if raw_steps is None else int(raw_steps)
        wanted = math.inf if raw_budget is None else float(raw_budget)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the server's training plan is unusable: {plan!r}") from exc
    budget = min(wanted, budget_s)
    return TrainPlan(lr, batch_size, epochs, max_steps, None if math.isinf(budget) else budget)


async def train(
    trainer: Trainer,
    params: Sequence[Array],
    data: DataSource,
    plan: TrainPlan,
    *,
    guard: Guard,
    emit: Emitter,
    seed: int,
    progress_every: int,
) -> LocalRun:
    """Run ``plan`` over ``data`` in a worker thread; see the module docstring."""
    cancelled = threading.Event()
    stopped_by: list[str] = []

    def batches() -> Iterator[Batch]:
        steps = examples = 0
        started = time.monotonic()
        for epoch in range(plan.epochs):
            for xb, yb in data.batches(plan.batch_size, seed=seed + epoch):
                yield xb, yb
                # resumed for the next batch: the step on this one has run
                steps += 1
                examples += len(xb)
                if steps % progress_every == 0:
                    elapsed = round(time.monotonic() - started, 3)
                    emit.from_thread("progress", steps=steps, examples=examples, elapsed_s=elapsed)

    def should_continue() -> bool:
        if cancelled.is_set():
            stopped_by.append("cancelled")
            return False
        reasons = guard()
        stopped_by.extend(reasons)
        return not reasons

    def work() -> TrainResult:
        return trainer.train_batches(params, batches(), plan, should_continue=should_continue)

    try:
        result = await asyncio.to_thread(work)
    except asyncio.CancelledError:
        cancelled.set()
        raise
    emit("progress", steps=result.steps, examples=result.num_examples, elapsed_s=result.wall_s)
    return LocalRun(result, tuple(stopped_by) if result.stopped == "aborted" else ())


async def evaluate(
    trainer: Trainer, params: Sequence[Array], data: DataSource, *, batch_size: int
) -> dict[str, float]:
    """Example-weighted loss (and accuracy, for classifiers) of ``params`` on ``data``."""

    def work() -> dict[str, float]:
        loss_sum = correct = 0.0
        count = 0
        has_accuracy = True
        for xb, yb in data.batches(batch_size):
            result = trainer.evaluate(params, xb, yb, batch_size=batch_size)
            loss_sum += result.loss * result.count
            count += result.count
            if result.accuracy is None:
                has_accuracy = False
            else:
                correct += result.accuracy * result.count
        if count == 0:
            raise ConfigError("no local examples to evaluate on")
        metrics = {"loss": loss_sum / count, "num_examples": float(count)}
        if has_accuracy:
            metrics["accuracy"] = correct / count
        return metrics

    return await asyncio.to_thread(work)
