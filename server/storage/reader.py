"""A thread with an event loop and a database engine of its own, for the dashboard's
reads (:class:`~server.monitor.rollups.RollupCache` refreshes).

Two reasons. The CPU a refresh costs becomes measurable exactly: nothing else runs on
that thread, so its :func:`time.thread_time` across the reads, plus the driver's own
thread (aiosqlite runs each connection's SQL on one), is what they cost, where the API's
event loop would also count every upload it handled while the SQL ran (measured under a
loaded fleet: 5-80 ms counted for ~6 ms of work). And the API's event loop does not
spend its time compiling queries and building rows for a dashboard.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.storage.database import create_engine
from server.storage.fleet import FleetRepository

T = TypeVar("T")


class FleetReader:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fleet-reader", daemon=True
        )
        self._repo: FleetRepository | None = None

    def start(self) -> FleetReader:
        # the engine is made here but first connects on the reader's loop, where it stays
        self._repo = FleetRepository(create_engine(self._url))
        self._thread.start()
        return self

    async def read(self, reads: Callable[[FleetRepository], Awaitable[T]]) -> tuple[T, float]:
        """``reads(repo)`` on the reader's thread, on one connection; returns its result
        and the CPU seconds it took (the reader's thread and the driver's)."""
        repo = self._repo
        assert repo is not None, "start() first"

        async def job() -> tuple[T, float]:
            started = time.thread_time()
            async with repo.reading() as conn:
                driver_started = conn.driver_cpu_s()
                result = await reads(conn)
                driver_s = conn.driver_cpu_s() - driver_started
            return result, time.thread_time() - started + driver_s

        future = asyncio.run_coroutine_threadsafe(job(), self._loop)
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        if not self._thread.is_alive() or self._repo is None:
            return
        engine = self._repo.engine
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(engine.dispose(), self._loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 10)
        self._loop.close()
