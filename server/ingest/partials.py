"""An API replica's pre-aggregation: fold accepted updates into partials, ship them.

Each task has one :class:`PartialShipper` per replica. An accepted upload is checked,
example-weighted and clipped into the shipper's open partial
(:class:`~server.aggregation.PartialBuilder`) and waits; once per group interval (or at
``group_max`` updates, or at once when the interval is 0) the shipper seals the partial
and ships it (:meth:`~server.coordination.partials.RedisPartialQueue.ship`: appended to
the task's stream and every session in it accepted, atomically). Then the uploads in it
are answered. A partial that cannot be shipped answers every upload in it 503, and none
of them was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.aggregation import PartialBuilder
from server.coordination import partials
from server.coordination.partials import RedisPartialQueue, ShippedUpdate
from server.coordination.tokens import SessionClaims
from server.errors import AsyncflError, Unavailable
from server.storage.records import LedgerEntry
from server.tasks.state import TaskState

logger = logging.getLogger(__name__)

GROUP_MAX = 512


@dataclass
class Batch:
    """The uploads of one partial: answered together once it is shipped."""

    done: asyncio.Future[str]
    updates: list[ShippedUpdate] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)

    async def wait(self) -> str:
        """The stream position of the shipped partial; Unavailable if it was not."""
        return await asyncio.shield(self.done)

    def settle(self, position: str | None, error: BaseException | None = None) -> None:
        if self.done.done():
            return
        if error is None:
            assert position is not None
            self.done.set_result(position)
        else:
            self.done.set_exception(error)
            self.done.exception()  # retrieved: every waiter gets it from its own await


class PartialShipper:
    def __init__(
        self,
        state: TaskState,
        queue: RedisPartialQueue,
        replica: str,
        *,
        interval_s: float,
        group_max: int = GROUP_MAX,
        on_ship: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.state = state
        self._queue = queue
        self._replica = replica
        self._interval = interval_s
        self._group_max = group_max
        self._on_ship = on_ship
        secure = state.config.secure_aggregation
        self._builder = PartialBuilder(
            state.spec,
            state.config.aggregation,
            masked=None if secure is None else secure.masked(state.config.aggregation),
        )
        self._loop = asyncio.get_running_loop()
        self._open = Batch(self._loop.create_future())
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._ids = itertools.count(1)
        self.shipped = self.bytes_shipped = 0

    def add(
        self,
        claims: SessionClaims,
        token: str,
        tensors: list[np.ndarray[Any, Any]],
        entry: LedgerEntry,
        ack: dict[str, Any],
        *,
        round_id: int = 0,
    ) -> Batch:
        """Fold an accepted upload into the open partial (UpdateRejected: nothing changed)."""
        assert entry.num_examples is not None
        assert entry.base_version is not None
        self._builder.add(
            claims.sid, tensors, entry.num_examples, entry.base_version, round_id=round_id
        )
        batch = self._open
        batch.updates.append(ShippedUpdate(claims, token, ack, entry.as_row()))
        self._wake.set()
        if len(batch.updates) >= self._group_max:
            self._full.set()
        return batch

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self._interval > 0:
                due = self._open.opened_at + self._interval - time.monotonic()
                if due > 0 and not self._full.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), due)
            await self.ship_open()

    async def ship_open(self) -> None:
        """Seal the open partial and ship it (a ship in flight finishes if cancelled)."""
        self._wake.clear()
        self._full.clear()
        batch = self._open
        if not batch.updates:
            return
        self._open = Batch(self._loop.create_future())
        partial = self._builder.seal()
        pid = f"{self._replica}:{next(self._ids)}"
        meta, body = partials.encode(
            pid, self._replica, time.time(), partial, [u.entry for u in batch.updates]
        )
        started = time.perf_counter()
        ship = asyncio.ensure_future(self._queue.ship(self.state.id, meta, body, batch.updates))
        try:
            position = await asyncio.shield(ship)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                batch.settle(await ship)
            raise
        except Exception as exc:  # Redis down, sessions taken over, or a bug: none stored
            level = logging.WARNING if isinstance(exc, AsyncflError) else logging.ERROR
            logger.log(level, "task %s: partial %s not shipped: %r", self.state.id, pid, exc)
            batch.settle(None, Unavailable("updates not stored", code="queue_unavailable"))
            return
        batch.settle(position)
        self.shipped += len(batch.updates)
        self.bytes_shipped += len(meta) + len(body)
        if self._on_ship is not None:
            self._on_ship(len(batch.updates), len(meta) + len(body), time.perf_counter() - started)


class ReplicaPartials:
    """This replica's shippers, one per task, and their loops (owned here)."""

    def __init__(
        self,
        queue: RedisPartialQueue,
        replica: str,
        *,
        interval_s: float,
        on_ship: Callable[[str, int, int, float], None] | None = None,
    ) -> None:
        self._queue = queue
        self._replica = replica
        self._interval = interval_s
        self._on_ship = on_ship
        self._shippers: dict[str, PartialShipper] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def shipper(self, state: TaskState) -> PartialShipper:
        shipper = self._shippers.get(state.id)
        if shipper is None:
            if self._closed:
                raise Unavailable("server is shutting down", code="draining", retry_after=5.0)
            hook = self._on_ship
            task_id = state.id
            shipper = PartialShipper(
                state,
                self._queue,
                self._replica,
                interval_s=self._interval,
                on_ship=(lambda n, b, s: hook(task_id, n, b, s)) if hook is not None else None,
            )
            self._shippers[state.id] = shipper
            self._loops[state.id] = asyncio.create_task(
                _logged(shipper.run(), f"shipper:{state.id}"), name=f"shipper:{state.id}"
            )
        return shipper

    async def close(self) -> None:
        """Ship what is open, then stop the loops."""
        self._closed = True
        for loop in self._loops.values():
            loop.cancel()
        for loop in self._loops.values():
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        for shipper in self._shippers.values():
            await shipper.ship_open()


async def _logged(coro: Any, name: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("%s stopped", name)
        raise
