"""What the client reports to the app while it works: one callback, typed events.

Kinds and their ``data``:

- ``checkin``: admitted (bool), version, session_id, deadline_s | retry_after, reason
- ``resume``: session_id, phase ("training" | "trained"), action ("continue" | "drop")
- ``progress``: steps, examples, elapsed_s (every ``progress_every`` steps, and at the end)
- ``evaluation``: version, loss, accuracy, num_examples
- ``upload``: version, num_examples, bytes, update_id, duplicate, position (the server's
  queue position of the update, when its answer names one)
- ``not_eligible``: reasons, during_training
- ``retry``: what, attempt, delay_s, error
- ``error``: error (message), type

Events are delivered on the event loop's thread. An exception in the callback is
logged and swallowed: observing the client must never break it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

logger = logging.getLogger(__name__)

EventKind = Literal[
    "checkin", "resume", "progress", "evaluation", "upload", "not_eligible", "retry", "error"
]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    task: str
    data: Mapping[str, Any] = field(default_factory=dict)


EventCallback = Callable[[Event], None]


class Emitter:
    """Calls the app's callback safely, from the loop thread or (via the loop) a worker."""

    def __init__(self, task: str, callback: EventCallback | None) -> None:
        self._task = task
        self._callback = callback
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __call__(self, kind: EventKind, **data: Any) -> None:
        if self._callback is None:
            return
        try:
            self._callback(Event(kind, self._task, data))
        except Exception:
            logger.exception("the event callback failed on a %s event", kind)

    def from_thread(self, kind: EventKind, **data: Any) -> None:
        """Emit from a worker thread: the callback runs on the loop thread."""
        if self._callback is None or self._loop is None:
            return
        # RuntimeError: the loop closed while the worker finished a step
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(lambda: self(kind, **data))
