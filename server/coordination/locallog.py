"""The embedded update queue: an append-only log file per task.

Record framing (little-endian)::

    b"AFL1" | u32 meta length | u64 body length | u32 crc32(meta) | meta (msgpack) | body

The body is the upload's own msgpack bytes, written with ``os.writev`` straight from the
request buffer (no re-encoding, no concatenation). A record is acknowledged once
``write`` returned (it then survives ``kill -9``: the kernel holds it) and, under
``log_fsync="always"``, once an fsync covered it. Concurrent uploads share fsyncs
(group commit). ``"interval"`` fsyncs once a second, like Redis' ``appendfsync
everysec``; ``"never"`` leaves it to the OS. A torn record at the tail (a crash in the
middle of a write) is cut off when the log is opened.

Segments are named by their first sequence number; :meth:`LocalLogQueue.trim` deletes
segments whose records are all committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from client_sdk.errors import WireFormatError
from client_sdk.wire import pack, unpack
from server.coordination.queue import QueuedUpdate
from server.errors import StorageError
from server.settings import LogFsync

logger = logging.getLogger(__name__)

MAGIC = b"AFL1"
HEADER = struct.Struct("<4sIQI")
LIVE_QUEUE_MAX = 256  # decoded updates waiting for the aggregator (backpressure beyond)


class _TaskLog:
    """One task's segments, its writer fd and the live hand-off to its consumer."""

    def __init__(self, directory: Path, fsync: LogFsync, segment_bytes: int) -> None:
        self.dir = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last_seq = self._recover()
        self.synced_seq = self.last_seq
        self.recovered_seq = self.last_seq
        self._fd = -1
        self._segment_size = 0
        self._sync_lock = asyncio.Lock()
        # Live hand-off to the consumer, filled in write order (unbounded queue; the
        # semaphore gives producers backpressure when the aggregator falls behind).
        self.live: asyncio.Queue[QueuedUpdate] = asyncio.Queue()
        self.room = asyncio.Semaphore(LIVE_QUEUE_MAX)
        self._open_segment(self.last_seq + 1, reuse_last=True)

    # -- opening --------------------------------------------------------------------
    def segments(self) -> list[tuple[int, Path]]:
        out = []
        for path in self.dir.glob("*.log"):
            with contextlib.suppress(ValueError):
                out.append((int(path.stem), path))
        return sorted(out)

    def _recover(self) -> int:
        """Scan every segment, cut a torn tail off the last one; return the last seq."""
        segments = self.segments()
        last = 0
        for i, (first, path) in enumerate(segments):
            good_end, seq = 0, first - 1
            for record_seq, _meta, _body, end in _read_records(path, first):
                good_end, seq = end, record_seq
            if path.stat().st_size != good_end:
                if i != len(segments) - 1:
                    raise StorageError(f"update log segment {path} is corrupt mid-log")
                logger.warning("update log %s: cutting a torn tail at byte %d", path, good_end)
                with open(path, "r+b") as fh:
                    fh.truncate(good_end)
                    os.fsync(fh.fileno())
            last = max(last, seq)
        return last

    def _open_segment(self, first_seq: int, *, reuse_last: bool = False) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
        segments = self.segments()
        reuse = reuse_last and segments
        path = segments[-1][1] if reuse else self.dir / f"{first_seq:020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = os.fstat(self._fd).st_size
        _fsync_dir(self.dir)

    # -- writing --------------------------------------------------------------------
    def write(self, update: QueuedUpdate) -> int:
        """Append one record (synchronously, in the caller's event-loop step)."""
        if self._segment_size >= self.segment_bytes:
            self._open_segment(self.last_seq + 1)
        seq = self.last_seq + 1
        meta = pack(update.meta() | {"seq": seq})
        header = HEADER.pack(MAGIC, len(meta), len(update.body), zlib.crc32(meta))
        total = len(header) + len(meta) + len(update.body)
        try:
            written = os.writev(self._fd, [header, meta, update.body])
            while written < total:  # short write: finish it from a joined copy
                rest = (header + meta + bytes(update.body))[written:]
                written += os.write(self._fd, rest)
        except OSError as exc:
            raise StorageError(f"cannot append to the update log: {exc}") from exc
        self._segment_size += total
        self.last_seq = seq
        return seq

    async def make_durable(self, seq: int) -> None:
        if self.fsync != "always":
            return
        while self.synced_seq < seq:
            async with self._sync_lock:  # one fsync at a time; it covers every waiter so far
                if self.synced_seq >= seq:
                    return
                target, fd = self.last_seq, self._fd
                try:
                    await asyncio.to_thread(os.fsync, fd)
                except OSError as exc:
                    raise StorageError(f"cannot fsync the update log: {exc}") from exc
                self.synced_seq = max(self.synced_seq, target)

    def sync_now(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            self.synced_seq = self.last_seq

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    # -- reading --------------------------------------------------------------------
    def backlog(self, after: int, upto: int) -> Iterator[QueuedUpdate]:
        segments = self.segments()
        for i, (first, path) in enumerate(segments):
            nxt = segments[i + 1][0] if i + 1 < len(segments) else None
            if nxt is not None and nxt <= after + 1:
                continue  # every record of this segment is at or before `after`
            for seq, meta, body, _end in _read_records(path, first):
                if after < seq <= upto:
                    yield QueuedUpdate.from_meta(meta, body, str(seq))

    def trim(self, upto: int) -> None:
        segments = self.segments()
        for i, (_first, path) in enumerate(segments[:-1]):
            next_first = segments[i + 1][0]
            if next_first - 1 <= upto:
                path.unlink(missing_ok=True)


class LocalLogQueue:
    """:class:`~server.coordination.queue.UpdateQueue` over per-task log files."""

    def __init__(self, root: Path, *, fsync: LogFsync = "always", segment_bytes: int) -> None:
        self._root = root
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._logs: dict[str, _TaskLog] = {}
        self._interval_task: asyncio.Task[None] | None = None

    def _log(self, task_id: str) -> _TaskLog:
        log = self._logs.get(task_id)
        if log is None:
            log = _TaskLog(self._root / task_id, self._fsync, self._segment_bytes)
            self._logs[task_id] = log
            if self._fsync == "interval" and self._interval_task is None:
                self._interval_task = asyncio.create_task(self._fsync_every_second())
        return log

    async def append(self, update: QueuedUpdate) -> str:
        log = self._log(update.task_id)
        await log.room.acquire()
        try:
            seq = log.write(update)
        except BaseException:
            log.room.release()
            raise
        # Hand over in the same step as the write, so consumption order is log order.
        log.live.put_nowait(replace(update, position=str(seq)))
        await log.make_durable(seq)
        return str(seq)

    async def consume(self, task_id: str, after: str) -> AsyncIterator[QueuedUpdate]:
        log = self._log(task_id)
        after_seq = int(after)
        for update in log.backlog(after_seq, log.recovered_seq):
            yield update
        while True:
            update = await log.live.get()
            log.room.release()
            seq = int(update.position)
            if seq > after_seq:
                await log.make_durable(seq)  # never fold what a crash could still erase
                yield update

    async def trim(self, task_id: str, upto: str) -> None:
        await asyncio.to_thread(self._log(task_id).trim, int(upto))

    async def last_position(self, task_id: str) -> str:
        return str(self._log(task_id).last_seq)

    def position_key(self, position: str) -> tuple[int, ...]:
        return (int(position),)

    async def appended_count(self, task_id: str) -> int:
        return self._log(task_id).last_seq  # sequence numbers start at 1 and never reset

    async def close(self) -> None:
        if self._interval_task is not None:
            self._interval_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._interval_task
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    async def _fsync_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for log in list(self._logs.values()):
                await asyncio.to_thread(log.sync_now)


def _read_records(path: Path, first_seq: int) -> Iterator[tuple[int, dict[str, Any], bytes, int]]:
    """Yield ``(seq, meta, body, end offset)`` for each whole, valid record."""
    data = path.read_bytes()
    offset, seq = 0, first_seq - 1
    while offset + HEADER.size <= len(data):
        magic, meta_len, body_len, crc = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + meta_len + body_len
        if magic != MAGIC or end > len(data):
            return
        meta_bytes = data[start : start + meta_len]
        if zlib.crc32(meta_bytes) != crc:
            return
        try:
            meta = unpack(meta_bytes)
        except WireFormatError:
            return
        seq = int(meta.get("seq", seq + 1))
        yield seq, meta, data[start + meta_len : end], end
        offset = end


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
