"""Server-side evaluation of new versions on the task's held-out set, off the event loop.

Requests coalesce: while one evaluation runs, only the newest requested version waits,
so a fast-moving task is evaluated as often as the machine allows and never falls
behind. Results are stored with the version and shown as the task's ``last_eval``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from client_sdk.errors import SdkError
from client_sdk.trainer import Trainer
from server.errors import AsyncflError
from server.tasks.state import TaskState

logger = logging.getLogger(__name__)

Store = Callable[[str, int, dict[str, Any]], Awaitable[None]]


class Evaluator:
    def __init__(
        self,
        state: TaskState,
        trainer: Trainer,
        x: np.ndarray[Any, Any],
        y: np.ndarray[Any, Any],
        store: Store,
        executor: Executor,
        *,
        every: int = 1,
    ) -> None:
        self._state = state
        self._trainer = trainer
        self._x, self._y = x, y
        self._store = store
        self._executor = executor
        self._every = every
        self._wanted: tuple[int, list[np.ndarray[Any, Any]]] | None = None
        self._wake = asyncio.Event()
        self.evaluated = 0

    def request(self, version: int, params: list[np.ndarray[Any, Any]]) -> None:
        if self._every <= 0 or version % self._every:
            return
        if self._wanted is None or version > self._wanted[0]:
            self._wanted = (version, params)
            self._wake.set()

    async def evaluate(self, version: int, params: list[np.ndarray[Any, Any]]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            result = await loop.run_in_executor(
                self._executor, self._trainer.evaluate, params, self._x, self._y
            )
        except SdkError as exc:
            raise AsyncflError(f"evaluation of version {version} failed: {exc}") from exc
        return {
            "version": version,
            "loss": result.loss,
            "accuracy": result.accuracy,
            "count": result.count,
            "eval_s": round(time.perf_counter() - started, 4),
            "at": time.time(),
        }

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._wanted is None:
                continue
            version, params = self._wanted
            self._wanted = None
            try:
                metrics = await self.evaluate(version, params)
                await self._store(self._state.id, version, metrics)
            except AsyncflError as exc:
                logger.warning("task %s: %s", self._state.id, exc)
                continue
            self.evaluated += 1
            last = self._state.last_eval
            if last is None or version >= int(last["version"]):
                self._state.last_eval = metrics
