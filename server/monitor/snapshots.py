"""Live snapshots: one document per task, built when something changed, written to
every open task page at once.

An open task page holds one server-sent-event stream (``GET
/admin/v1/tasks/{task}/stream``) or, where a proxy blocks streams, polls ``/snapshot``
with its ETag. For each task with a stream open (or polled in the last ``POLL_KEEP_S``)
the hub ticks at most once every ``MIN_INTERVAL_S``:

1. the summary, from the task's status in memory (version, state, sessions, counts,
   update rate);
2. the rollup, re-read from the database only when the task's marks moved
   (:meth:`~server.monitor.service.Monitor.current`: a commit, a held-out or federated
   evaluation, a refusal); check-ins this process counted are folded as they are
   written, with no read;
3. if either changed since the last snapshot: one JSON document (the newest versions and
   the trailing ``RESEND_S`` of the timeline, what a page holding the rest needs; the
   rollup's parts are encoded once per refresh, the timeline once per refresh or fold
   of check-ins), one SSE frame of it, and every stream is woken to write those same
   bytes.

Nothing changed: no query, no encoding, no write, but a comment line every
``KEEPALIVE_S`` (proxies close silent connections; the page's watchdog too). A version
event on the event bus (another replica committed) names the new head, so a replica
re-reads the rollup without waiting for its own state sync, and wakes the hub at once.
The cost does not grow with the pages: one build per change, then one write of the same
bytes per stream (CPU on :class:`~server.monitor.meter.CpuMeter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from server.coordination.events import EventBus
from server.errors import AsyncflError
from server.monitor.live import progress_part, recent_since, timeline_part
from server.monitor.service import Monitor
from server.tasks.manager import TaskManager, TaskRuntime

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0  # a page gets at most one snapshot a second
KEEPALIVE_S = 15.0
POLL_KEEP_S = 12.0  # a polled task stays ticked this long (hidden tabs poll every 5 s)
KEEPALIVE = b": keepalive\n\n"

Summarize = Callable[[TaskRuntime], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Snapshot:
    seq: int
    etag: str
    body: bytes  # the JSON document
    frame: bytes  # the same as one server-sent event


class _Channel:
    """One task's current snapshot and the streams waiting for the next."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.streams = 0
        self.polled_at = -float("inf")
        self.ticked_at = -float("inf")
        self.sent_at = -float("inf")
        self.pings = 0
        self.summary: dict[str, Any] | None = None
        self.generation = -1  # of the rollup whose parts are encoded below
        self.progress = b""  # versions, tiers, gap, cost
        self.timeline_key = (-1, -1)  # the rollup's generations of ``timeline``
        self.timeline = b""
        self.closed = False
        self.lock = asyncio.Lock()
        self._woken = asyncio.Event()

    def wake(self) -> None:
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def wait(self) -> None:
        await self._woken.wait()


class Subscription:
    """One stream's view of a channel: the frames it has not written yet."""

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self._seq = -1
        self._pings = channel.pings

    async def next(self) -> bytes | None:
        """The current snapshot first, then each newer one, or a keepalive; None once
        the stream should end (shutdown, the task is gone)."""
        channel = self._channel
        while True:
            if channel.closed:
                return None
            snapshot = channel.snapshot
            if snapshot is not None and snapshot.seq != self._seq:
                self._seq = snapshot.seq
                return snapshot.frame
            if channel.pings != self._pings:
                self._pings = channel.pings
                return KEEPALIVE
            await channel.wait()  # nothing awaited since the checks: no wake is missed


class LiveHub:
    def __init__(
        self,
        monitor: Monitor,
        manager: TaskManager,
        summarize: Summarize,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._monitor = monitor
        self._manager = manager
        self._summarize = summarize
        self._min_interval_s = min_interval_s
        self._keepalive_s = keepalive_s
        self._channels: dict[str, _Channel] = {}
        self._heads: dict[str, int] = {}  # newest versions other processes announced
        self._wake = asyncio.Event()
        self._nonce = secrets.token_hex(4)  # ETags of another process never match
        self._seq = 0
        self.closed = False
        self.snapshots = 0  # documents built
        self.frames = 0  # snapshots and keepalives written to streams

    @property
    def streams(self) -> int:
        return sum(channel.streams for channel in self._channels.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, task_id: str) -> AsyncIterator[Subscription]:
        """A stream of ``task_id``'s snapshots (the current one at once)."""
        channel = self._channel(task_id)
        channel.streams += 1
        try:
            await self._ensure(task_id, channel)
            yield Subscription(channel)
        finally:
            channel.streams -= 1

    async def poll(self, task_id: str) -> Snapshot:
        """The current snapshot (the polling fallback); keeps the task ticked."""
        channel = self._channel(task_id)
        channel.polled_at = time.monotonic()
        await self._ensure(task_id, channel)
        assert channel.snapshot is not None  # _ensure built one or raised
        return channel.snapshot

    def sent(self, seconds: float) -> None:
        """A stream wrote a frame, in ``seconds`` of CPU."""
        self.frames += 1
        self._monitor.meter.add(seconds, "stream")

    def close(self) -> None:
        """End every stream (shutdown)."""
        self.closed = True
        for channel in self._channels.values():
            channel.closed = True
            channel.wake()
        self._wake.set()

    async def run(self) -> None:
        while not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._min_interval_s)
            self._wake.clear()
            now = time.monotonic()
            for task_id, channel in list(self._channels.items()):
                if channel.streams == 0 and now - channel.polled_at > POLL_KEEP_S:
                    del self._channels[task_id]
                    continue
                if now - channel.ticked_at < 0.9 * self._min_interval_s:
                    continue  # woken early by an event: this one was just ticked
                try:
                    async with channel.lock:
                        await self._tick(task_id, channel)
                except AsyncflError as exc:  # the database or Redis is away: next tick
                    logger.warning("live snapshot of task %s: %s", task_id, exc)

    async def listen(self, events: EventBus) -> None:
        """Commits and pauses announced on the event bus wake the hub at once."""
        async for event in events.subscribe():
            task_id = event.get("task")
            if not isinstance(task_id, str):
                continue
            if event.get("type") == "version":
                try:
                    version = int(event.get("version", -1))
                except (TypeError, ValueError):
                    continue
                if version > self._heads.get(task_id, -1):
                    self._heads[task_id] = version
            if task_id in self._channels:
                self._wake.set()

    # -- building -----------------------------------------------------------------------
    def _channel(self, task_id: str) -> _Channel:
        self._manager.get(task_id)  # NotFound for an unknown task
        channel = self._channels.get(task_id)
        if channel is None or channel.closed:
            channel = self._channels[task_id] = _Channel()
            channel.closed = self.closed
        return channel

    async def _ensure(self, task_id: str, channel: _Channel) -> None:
        """A snapshot at most ``min_interval_s`` old (a task no one watched has none)."""
        async with channel.lock:
            stale = time.monotonic() - channel.ticked_at > 1.5 * self._min_interval_s
            if channel.snapshot is None or stale:
                await self._tick(task_id, channel)

    async def _tick(self, task_id: str, channel: _Channel) -> None:
        channel.ticked_at = time.monotonic()
        runtime = self._manager.runtimes.get(task_id)
        if runtime is None:  # the task is gone: end its streams
            channel.closed = True
            channel.wake()
            return
        meter = self._monitor.meter
        # exact when the status is all in memory (embedded); in distributed mode it
        # awaits Redis, and what the loop ran meanwhile is counted too
        with meter.measure("snapshot"):
            summary = await self._summarize(runtime)
        rollup = await self._monitor.current(runtime, self._heads.get(task_id))
        with meter.measure("snapshot"):
            timeline_key = (rollup.generation, rollup.checkins_generation)
            changed = timeline_key != channel.timeline_key
            if not changed and summary == channel.summary and channel.snapshot is not None:
                self._keepalive(channel)
                return
            now = time.time()
            if rollup.generation != channel.generation:
                progress = progress_part(self._monitor, rollup, after_version=rollup.newest_version)
                channel.progress = _members(progress)
                channel.generation = rollup.generation
            if changed:
                timeline = timeline_part(self._monitor, rollup, since=recent_since(now))
                channel.timeline = _members({"timeline": timeline})
                channel.timeline_key = timeline_key
            channel.summary = summary
            self._seq += 1
            body = b'{"now":%s,"seq":%d,"summary":%s,%s,%s}' % (
                json.dumps(round(now, 3)).encode(),
                self._seq,
                _encode(summary),
                channel.progress,
                channel.timeline,
            )
            frame = b"id: %d\nevent: snapshot\ndata: %s\n\n" % (self._seq, body)
            channel.snapshot = Snapshot(self._seq, f'"{self._nonce}-{self._seq}"', body, frame)
            channel.sent_at = channel.ticked_at
            self.snapshots += 1
            channel.wake()

    def _keepalive(self, channel: _Channel) -> None:
        if channel.streams and channel.ticked_at - channel.sent_at >= self._keepalive_s:
            channel.pings += 1
            channel.sent_at = channel.ticked_at
            channel.wake()


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _members(doc: dict[str, Any]) -> bytes:
    """An object's members, encoded, to splice into another object."""
    return _encode(doc)[1:-1]
