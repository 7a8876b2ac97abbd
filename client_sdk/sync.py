"""A blocking wrapper around :class:`~client_sdk.client.Client` for apps without an event
loop. It owns one private loop (``asyncio.Runner``) for its whole life, so the HTTP
connection pool is reused across calls. Use it from one thread at a time."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from client_sdk.client import Client
from client_sdk.results import RoundResult

_STOP_POLL_S = 0.1


class SyncClient:
    """Same arguments as :class:`Client`; ``run_once``/``run_forever`` block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._runner = asyncio.Runner()
        self.client = Client(*args, **kwargs)

    def run_once(self) -> RoundResult:
        return self._runner.run(self.client.run_once())

    def run_forever(
        self, stop: threading.Event | None = None, *, max_rounds: int | None = None
    ) -> None:
        """Run rounds until ``stop`` is set from another thread (or ``max_rounds`` ran)."""
        self._runner.run(self._run_forever(stop, max_rounds))

    async def _run_forever(self, stop: threading.Event | None, max_rounds: int | None) -> None:
        done = asyncio.Event()
        if stop is not None and stop.is_set():
            done.set()

        async def watch() -> None:
            while stop is not None and not stop.is_set():  # noqa: ASYNC110 - a thread's Event
                await asyncio.sleep(_STOP_POLL_S)
            done.set()

        watcher = asyncio.create_task(watch()) if stop is not None else None
        try:
            await self.client.run_forever(done, max_rounds=max_rounds)
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    def close(self) -> None:
        try:
            self._runner.run(self.client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
