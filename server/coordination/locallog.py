"""The raw-upload audit log (optional): an append-only log file per task, local.

Off by default (``ASYNCFL_AUDIT_LOG``): updates are made durable by checkpoints of the
folded buffer, not by writing each body. An operator who wants an audit trail of the
raw updates turns it on; each accepted upload's body is then appended here, with its
id, device, base version and example count, before it is acknowledged (each API
process writes its own log under its data dir). Nothing reads it back but operators'
tools (:meth:`AuditLog.records`).

Record framing (little-endian)::

    b"AFL1" | u32 meta length | u64 body length | u32 crc32(meta) | meta (msgpack) | body

The body is the upload's own msgpack bytes, written with ``os.writev`` straight from the
request buffer (no re-encoding, no concatenation). A record is acknowledged once
``write`` returned (it then survives ``kill -9``: the kernel holds it) and, under
``log_fsync="always"``, once an fsync covered it. ``"interval"`` fsyncs once a second,
like Redis' ``appendfsync everysec``; ``"never"`` leaves it to the OS. A torn record at
the tail (a crash in the middle of a write) is cut off when the log is opened.

Each task's log has one writer thread: the event loop numbers a record and hands it
over, the thread writes every record handed over since its last pass with one
``writev`` and (under ``"always"``) one fsync, then wakes the waiters (group commit).
The event loop never blocks on the disk: not on a write stalled by writeback, not on a
segment rollover's fsync.

Segments are named by their first sequence number; rotating them away (archiving,
deleting) is the operator's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client_sdk.errors import WireFormatError
from client_sdk.wire import pack, unpack
from server.errors import StorageError
from server.settings import LogFsync
from server.storage.blobs import fsync_dir

logger = logging.getLogger(__name__)

MAGIC = b"AFL1"
HEADER = struct.Struct("<4sIQI")
INTERVAL_FSYNC_S = 1.0
IOV_MAX = 1024  # buffers per writev (Linux' limit)

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class AuditRecord:
    """One accepted upload as it came: its body and what the server knew of it."""

    update_id: str
    task_id: str
    device_id: str
    base_version: int
    num_examples: int
    created_at: float
    body: Buffer = field(repr=False)
    seq: int = 0

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.update_id,
            "task": self.task_id,
            "device": self.device_id,
            "base": self.base_version,
            "n": self.num_examples,
            "at": self.created_at,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], body: Buffer, seq: int) -> AuditRecord:
        return cls(
            update_id=str(meta["id"]),
            task_id=str(meta["task"]),
            device_id=str(meta["device"]),
            base_version=int(meta["base"]),
            num_examples=int(meta["n"]),
            created_at=float(meta["at"]),
            body=body,
            seq=seq,
        )


class _TaskLog:
    """One task's segments and its writer thread.

    ``last_seq`` is the last number handed out (event loop side); ``durable_seq`` the
    last record written and, under ``"always"``, fsynced (the writer publishes it to the
    loop). A failed write or fsync stops the log: that record and every later one are
    refused (fail-stop: after a failed fsync the kernel may have dropped the pages, so
    carrying on could acknowledge what is not on disk); a restart recovers the file.
    """

    def __init__(self, directory: Path, fsync: LogFsync, segment_bytes: int) -> None:
        self.dir = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self.last_seq = self._recover()
        self.durable_seq = self.last_seq
        self.recovered_seq = self.last_seq
        self._fd = -1
        self._segment_size = 0
        self._open_segment(self.last_seq + 1, reuse_last=True)
        # event loop side: who waits for which record; where the log failed
        self._loop = asyncio.get_running_loop()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._failed_from: int | None = None
        self._error: StorageError | None = None
        # writer side (``_pending`` and ``_closing`` are guarded by ``_cond``)
        self._cond = threading.Condition()
        self._pending: list[tuple[int, bytes, Buffer]] = []
        self._closing = False
        self._broken: StorageError | None = None
        self._written_seq = self._synced_seq = self.last_seq
        self._last_sync = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"afl-log-{directory.name}", daemon=True
        )
        self._thread.start()

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
        """Switch to a new segment (writer thread; in __init__ before it starts)."""
        if self._fd >= 0:
            self._sync()  # records acknowledged under "interval"/"never" become durable
            os.close(self._fd)
            self._fd = -1
        segments = self.segments()
        reuse = reuse_last and segments
        path = segments[-1][1] if reuse else self.dir / f"{first_seq:020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = os.fstat(self._fd).st_size
        fsync_dir(self.dir)

    # -- writing: event loop side -------------------------------------------------------
    def write(self, update: AuditRecord) -> int:
        """Number a record and hand it to the writer; :meth:`make_durable` waits for it."""
        if self._error is not None or self._broken is not None:
            raise self._error or self._broken or StorageError("update log failed")
        seq = self.last_seq + 1
        meta = pack(update.meta() | {"seq": seq})
        head = HEADER.pack(MAGIC, len(meta), len(update.body), zlib.crc32(meta)) + meta
        with self._cond:
            if self._closing:
                raise StorageError("the update log is closed")
            self._pending.append((seq, head, update.body))
            if len(self._pending) == 1:
                self._cond.notify()
        self.last_seq = seq
        return seq

    async def make_durable(self, seq: int) -> None:
        """Wait until record ``seq`` is written (and fsynced under ``"always"``); raise
        :class:`StorageError` if it never will be."""
        if seq <= self.durable_seq:
            return
        if self._error is not None and self._failed_from is not None and seq >= self._failed_from:
            raise self._error
        future = self._loop.create_future()
        heapq.heappush(self._waiters, (seq, next(self._tie), future))
        await future

    def _published(self, durable: int, error: StorageError | None) -> None:
        """A writer pass ended: advance ``durable_seq`` and wake whom it concerns."""
        self.durable_seq = max(self.durable_seq, durable)
        if error is not None and self._error is None:
            self._error, self._failed_from = error, self.durable_seq + 1
        waiters = self._waiters
        while waiters and (waiters[0][0] <= self.durable_seq or self._error is not None):
            seq, _, future = heapq.heappop(waiters)
            if future.done():
                continue
            if seq <= self.durable_seq:
                future.set_result(None)
            else:
                assert self._error is not None
                future.set_exception(self._error)

    # -- writing: the writer thread -------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    if not self._interval_sync_pending():
                        self._cond.wait()
                        continue
                    due = self._last_sync + INTERVAL_FSYNC_S - time.monotonic()
                    if due <= 0:
                        break
                    self._cond.wait(due)
                batch, self._pending = self._pending, []
                closing = self._closing
            if batch:
                self._write_batch(batch)
            elif self._interval_sync_pending():
                self._guarded(self._sync)
            if closing and not batch:
                return

    def _interval_sync_pending(self) -> bool:
        return self.fsync == "interval" and self._synced_seq < self._written_seq

    def _write_batch(self, batch: list[tuple[int, bytes, Buffer]]) -> None:
        if self._broken is None:
            self._guarded(lambda: self._write_records(batch))
        durable = self._synced_seq if self.fsync == "always" else self._written_seq
        with contextlib.suppress(RuntimeError):  # a closed loop: process exit, nobody waits
            self._loop.call_soon_threadsafe(self._published, durable, self._broken)

    def _write_records(self, batch: list[tuple[int, bytes, Buffer]]) -> None:
        start = 0
        while start < len(batch):
            if self._segment_size >= self.segment_bytes:
                self._open_segment(batch[start][0])
            end, buffers, size = self._chunk(batch, start)
            good = self._segment_size
            try:
                _write_all(self._fd, buffers, size)
            except OSError:
                with contextlib.suppress(OSError):  # leave no torn record behind
                    os.ftruncate(self._fd, good)
                raise
            self._segment_size += size
            self._written_seq = batch[end - 1][0]
            start = end
        if self.fsync == "always" or (
            self.fsync == "interval" and time.monotonic() - self._last_sync >= INTERVAL_FSYNC_S
        ):
            self._sync()

    def _chunk(
        self, batch: list[tuple[int, bytes, Buffer]], start: int
    ) -> tuple[int, list[Buffer], int]:
        """``batch[start:end]``: what fits this segment and one writev."""
        room = self.segment_bytes - self._segment_size
        buffers: list[Buffer] = []
        end, size = start, 0
        while end < len(batch) and len(buffers) < IOV_MAX and size < room:
            _seq, head, body = batch[end]
            buffers += (head, body)
            size += len(head) + len(body)
            end += 1
        return end, buffers, size

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except OSError as exc:
            self._broken = StorageError(f"cannot append to the update log: {exc}")
            logger.error("update log %s failed, refusing appends until restart: %s", self.dir, exc)

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._synced_seq = self._written_seq
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Write what was handed over, fsync, stop the writer (blocks: run in a thread)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    # -- reading --------------------------------------------------------------------
    def records(self) -> Iterator[AuditRecord]:
        for first, path in self.segments():
            for seq, meta, body, _end in _read_records(path, first):
                yield AuditRecord.from_meta(meta, body, seq)


def _write_all(fd: int, buffers: list[Buffer], size: int) -> None:
    """``writev`` every buffer, finishing a short write from where it stopped."""
    written = os.writev(fd, buffers)
    while written < size:
        rest: list[Buffer] = []
        skip = written
        for buf in buffers:
            view = memoryview(buf)
            if skip >= len(view):
                skip -= len(view)
                continue
            rest.append(view[skip:])
            skip = 0
        buffers, size = rest, size - written
        written = os.writev(fd, buffers)


class AuditLog:
    """Per-task audit logs under ``root/<task>``."""

    def __init__(self, root: Path, *, fsync: LogFsync = "always", segment_bytes: int) -> None:
        self._root = root
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._logs: dict[str, _TaskLog] = {}

    def _log(self, task_id: str) -> _TaskLog:
        log = self._logs.get(task_id)
        if log is None:
            log = _TaskLog(self._root / task_id, self._fsync, self._segment_bytes)
            self._logs[task_id] = log
        return log

    async def append(self, record: AuditRecord) -> int:
        """Write ``record`` and wait until it is durable (per the fsync policy)."""
        log = self._log(record.task_id)
        seq = log.write(record)
        await log.make_durable(seq)
        return seq

    def records(self, task_id: str) -> Iterator[AuditRecord]:
        """Every record of the task's log, oldest first (reads the files)."""
        return self._log(task_id).records()

    def appended(self, task_id: str) -> int:
        return self._log(task_id).durable_seq

    async def close(self) -> None:
        for log in self._logs.values():
            await asyncio.to_thread(log.close)
        self._logs.clear()


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
