"""Checkpoints of a task's aggregator: what makes a folded update durable (embedded).

An upload is folded into the task's aggregator as it arrives and acknowledged once a
checkpoint that contains it is durable. A checkpoint holds all that resuming needs
beyond the committed head: the open buffer's weighted sum and weights, sealed masked
buffers, counters, the noise generator, the sync round, the ledger entries of the
buffered updates, and every version stepped but not yet committed with the ledger rows
of the updates it applied (``jobs``); while there are such versions it holds the
aggregator's whole state (``whole``: parameters and optimizer state too). It is written
once per group of updates, not once per update; versions commit behind it
(:mod:`server.tasks.local`), so the newest valid record is the one to resume from.

Two slot files per task, written in turn (``slot-0``, ``slot-1``) and rewritten in
place: a record overwrites the older slot, so a torn write can only damage the slot
being written and the other still holds the previous checkpoint. Records written by an
earlier release hold the buffers only and were written before their versions committed:
:meth:`CheckpointLog.resumable` finds the one at the committed head among them. Framing
(little-endian)::

    b"AFC2" | u64 seq | u32 meta length | u64 total length | u64 params length
    | u64 xxh3-64 | meta (msgpack) | total (raw float32 bytes of the buffer sum, may be
    empty) | params (raw float32 bytes of the parameters of a whole record, may be empty)

where the xxh3-64 checksum covers everything before it and after it (header fields
included). The raw parts are written from the aggregator's own arrays (the parameters
without a copy: the aggregator copies them before its next step changes them), so a
whole record costs the loop no copy of the parameters and no msgpack of them. Records of
the earlier framing (``b"AFC1" | u64 seq | u32 meta length | u64 total length | u32
crc32 | meta | total``, the parameters inside the meta) are read as before.

One writer thread per task (its own, fed by a queue: a hop through the shared thread
pool cost twice its CPU) does the ``pwritev`` and, under ``fsync="always"``, the
``fsync`` before it reports the record durable; ``"interval"`` fsyncs at most once a
second and ``"never"`` leaves it to the OS (both survive a process crash, not a power
cut). A failed write or fsync stops the log (fail-stop: after a failed fsync the kernel
may have dropped the pages); the task refuses uploads until the process restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

from client_sdk.errors import WireFormatError
from client_sdk.wire import pack, unpack
from server.errors import StorageError
from server.settings import LogFsync
from server.storage.blobs import fsync_dir

logger = logging.getLogger(__name__)

MAGIC = b"AFC2"
HEADER = struct.Struct("<4sQIQQQ")
_FIELDS = struct.Struct("<4sQIQQ")  # the header up to its checksum
MAGIC_V1 = b"AFC1"  # the earlier framing: crc32, no params part
HEADER_V1 = struct.Struct("<4sQIQI")
_FIELDS_V1 = struct.Struct("<4sQIQ")
SLOTS = 2
INTERVAL_FSYNC_S = 1.0

Raw = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Checkpoint:
    """One record: ``meta`` (plain values), ``total`` (the buffer sum's raw bytes) and
    ``params`` (a whole record's parameters as raw float32 bytes; empty otherwise, and in
    records of the earlier framing, whose parameters are in the meta's state)."""

    seq: int
    meta: dict[str, Any]
    total: Raw
    params: Raw = b""


class CheckpointLog:
    """The two checkpoint slots of one task and the thread that writes them."""

    def __init__(self, directory: Path, fsync: LogFsync) -> None:
        self.dir = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._fds = [
            os.open(directory / f"slot-{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(SLOTS)
        ]
        fsync_dir(directory)
        latest = self.read_latest()
        self.seq = latest.seq if latest is not None else 0
        self._last_sync = time.monotonic()
        self._broken: StorageError | None = None
        self._lock = threading.Lock()  # one write at a time, in seq order
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None

    def records(self) -> list[Checkpoint]:
        """The whole, valid records of both slots, newest first."""
        found = [r for r in map(_read_slot, self._fds) if r is not None]
        return sorted(found, key=lambda r: r.seq, reverse=True)

    def read_latest(self) -> Checkpoint | None:
        """The newest whole, valid record of either slot (None when there is none)."""
        found = self.records()
        return found[0] if found else None

    def latest(self, task_id: str) -> Checkpoint | None:
        """The newest whole, valid record of ``task_id`` (None when there is none)."""
        for record in self.records():
            if record.meta.get("task") == task_id:
                return record
        return None

    def restore_point(self, task_id: str, head: int) -> Checkpoint | None:
        """The record a restart at committed version ``head`` resumes from: the newest
        (one written by an earlier release: the newest at the head, see
        :meth:`resumable`); None when there is none, or when it is behind the head
        (spent: everything in it is in a version since)."""
        record = self.latest(task_id)
        if record is not None and "jobs" not in record.meta:
            record = self.resumable(task_id, head)  # buffers only, written before commits
        if record is None:
            return None
        version = int(record.meta.get("version", -1))
        if version < head:
            logger.warning(
                "task %s: checkpoint %d of version %d is behind the committed head %d: spent",
                task_id,
                record.seq,
                version,
                head,
            )
            return None
        return record

    def held(self, task_id: str, head: int) -> list[str]:
        """The update ids a restart at committed version ``head`` brings back from the
        checkpoints: the buffered ones, and those applied to versions the database
        lacks (they are committed at the restart). For audits and crash tests."""
        latest = self.restore_point(task_id, head)
        if latest is None:
            return []
        held = [str(e["id"]) for e in latest.meta["entries"]]
        for job in job_rows(latest.meta):
            if int(job["version"]) > head:
                held += [str(e["id"]) for e in job["applied"]]
        return held

    def resumable(self, task_id: str, head: int) -> Checkpoint | None:
        """The record a task resumes from at committed version ``head``: the newest
        written at that version. A newer record of a later version was written for
        versions whose commit did not happen (checkpoints are written before their
        versions commit) and is passed over; None when there is no record, or when the
        newest one left is of an older version (spent: all of it is in a version)."""
        for record in self.records():
            if record.meta.get("task") != task_id:
                continue
            version = int(record.meta.get("version", -1))
            if version > head:
                logger.warning(
                    "task %s: checkpoint %d of version %d is ahead of the committed head %d "
                    "(its versions did not commit); resuming from the one before",
                    task_id,
                    record.seq,
                    version,
                    head,
                )
                continue
            return record if version == head else None
        return None

    def keep(self, record: Checkpoint) -> None:
        """Resuming from ``record``: the next write goes to the other slot, so the record
        stays whole until a newer one is durable."""
        self.seq = record.seq

    async def write(self, meta: dict[str, Any], total: Raw, params: Raw = b"") -> int:
        """Write the next record and wait until it is durable (per the fsync policy);
        returns its seq. ``total`` and ``params`` must not change until it returns.
        Raises :class:`StorageError` (and stays broken) on failure."""
        if self._broken is not None:
            raise self._broken
        self.seq += 1
        seq = self.seq
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        if self._writer is None or not self._writer.is_alive():  # first write, or forked
            self._writer = threading.Thread(
                target=self._write_loop, name=f"checkpoints-{self.dir.name}", daemon=True
            )
            self._writer.start()
        self._queue.put((loop, done, seq, pack(meta), total, params))
        await done
        return seq

    def _write_loop(self) -> None:
        """The writer thread: records in seq order, each answered on its caller's loop."""
        while (job := self._queue.get()) is not None:
            loop, done, seq, meta, total, params = job
            error: BaseException | None = None
            try:
                self._write_sync(seq, meta, total, params)
            except BaseException as exc:  # answered to the caller, who raises it
                error = exc
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_answer, done, error)

    def _write_sync(self, seq: int, meta: bytes, total: Raw, params: Raw) -> None:
        with self._lock:
            if self._broken is not None:
                raise self._broken
            fields = _FIELDS.pack(MAGIC, seq, len(meta), len(total), len(params))
            header = fields + struct.pack("<Q", _checksum(fields, meta, total, params))
            fd = self._fds[seq % SLOTS]
            try:
                os.pwritev(fd, [header, meta, total, params], 0)
                if self.fsync == "always" or (
                    self.fsync == "interval"
                    and time.monotonic() - self._last_sync >= INTERVAL_FSYNC_S
                ):
                    for each in self._fds:
                        os.fsync(each)
                    self._last_sync = time.monotonic()
            except OSError as exc:
                self._broken = StorageError(f"cannot write checkpoint {self.dir}: {exc}")
                logger.error("checkpoint log %s failed; refusing uploads until restart", self.dir)
                raise self._broken from exc

    def close(self) -> None:
        if self._writer is not None:  # what is queued is written first
            self._queue.put(None)
            self._writer.join()
            self._writer = None
        with self._lock:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.fsync(fd)
                os.close(fd)
            self._fds = []


_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]", int, bytes, Raw, Raw]


def _answer(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():  # the caller was cancelled; the write happened all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def job_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The versions a record holds that were not committed when it was written, oldest
    first: each packed once (msgpack) when its group was cut, carried as bytes after."""
    rows = [unpack(packed) for packed in meta.get("jobs", [])]
    if not all(isinstance(row, dict) for row in rows):
        raise StorageError("a checkpoint's versions are not rows")
    return rows


def _checksum(fields: Raw, *parts: Raw) -> int:
    digest = xxhash.xxh3_64(fields)
    for part in parts:
        digest.update(part)
    return digest.intdigest()


def _crc_v1(seq: int, meta_len: int, total_len: int, meta: Any, total: Any) -> int:
    head = _FIELDS_V1.pack(MAGIC_V1, seq, meta_len, total_len)
    return zlib.crc32(total, zlib.crc32(meta, zlib.crc32(head)))


def _read_slot(fd: int) -> Checkpoint | None:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0)
    found = _parse(memoryview(data)) if data[:4] == MAGIC else _parse_v1(data)
    if found is None:
        return None
    seq, meta_bytes, total, params = found
    try:
        meta = unpack(meta_bytes)
    except WireFormatError:
        return None
    if not isinstance(meta, dict):
        return None
    return Checkpoint(seq, meta, total, params)


def _parse(data: memoryview) -> tuple[int, Raw, Raw, Raw] | None:
    """A record of this framing: seq, meta, total, params (None: torn or corrupt)."""
    if len(data) < HEADER.size:
        return None
    _, seq, meta_len, total_len, params_len, checksum = HEADER.unpack_from(data, 0)
    meta_at = HEADER.size
    total_at = meta_at + meta_len
    params_at = total_at + total_len
    end = params_at + params_len
    if end > len(data):
        return None
    meta, total = data[meta_at:total_at], data[total_at:params_at]
    params = data[params_at:end]
    if _checksum(data[: _FIELDS.size], meta, total, params) != checksum:
        return None
    return seq, bytes(meta), total, params


def _parse_v1(data: bytes) -> tuple[int, Raw, Raw, Raw] | None:
    """A record of the earlier framing (crc32, no params part)."""
    if len(data) < HEADER_V1.size:
        return None
    magic, seq, meta_len, total_len, crc = HEADER_V1.unpack_from(data, 0)
    end = HEADER_V1.size + meta_len + total_len
    if magic != MAGIC_V1 or end > len(data):
        return None
    meta = data[HEADER_V1.size : HEADER_V1.size + meta_len]
    total = data[HEADER_V1.size + meta_len : end]
    if _crc_v1(seq, meta_len, total_len, meta, total) != crc:
        return None
    return seq, meta, total, b""
