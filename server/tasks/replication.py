"""Keeping a replica's task states current: events for speed, polling for certainty."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from server.coordination.events import EventBus
from server.errors import AsyncflError
from server.tasks.manager import TaskManager

logger = logging.getLogger(__name__)


class StateSync:
    def __init__(self, manager: TaskManager, events: EventBus, *, poll_s: float = 2.0) -> None:
        self._manager = manager
        self._events = events
        self._poll_s = poll_s

    async def listen(self) -> None:
        """Refresh a task as soon as another process says it changed."""
        async for event in self._events.subscribe():
            await self._apply(event)

    async def _apply(self, event: dict[str, Any]) -> None:
        task_id = event.get("task")
        if not isinstance(task_id, str):
            return
        runtime = self._manager.runtimes.get(task_id)
        if (
            event.get("type") == "version"
            and runtime is not None
            and int(event.get("version", -1)) <= runtime.state.version
        ):
            return  # this process committed it, or already knows it
        try:
            await self._manager.refresh(task_id)
        except AsyncflError as exc:
            logger.warning("cannot refresh task %s after an event: %s", task_id, exc)

    async def poll(self) -> None:
        """Every few seconds: new tasks, new versions, pause and resume."""
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self._manager.load_all()
                for task_id in list(self._manager.runtimes):
                    await self._manager.refresh(task_id)
            except AsyncflError as exc:
                logger.warning("state poll failed: %s", exc)
