"""Content-addressed blob store: parameters, snapshots, graphs and evaluation sets.

A blob's name is the sha256 of its bytes, so a blob is written once, never changes,
and can be cached forever by anyone (the HTTP layer serves it with that digest as ETag).
Writes go to a temporary file, are fsynced, then renamed into place: a reader never
sees a partial blob, and a crash leaves either nothing or the whole blob.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from server.errors import NotFound, StorageError


def sha256_hex(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalBlobStore:
    """Blobs as files under ``root/ab/<sha256>``; shared storage serves several replicas."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise NotFound(f"no blob {digest!r}", code="unknown_blob")
        return self._root / digest[:2] / digest

    async def put(self, data: bytes | bytearray | memoryview) -> str:
        return await asyncio.to_thread(self.put_sync, data)

    async def put_many(self, blobs: Sequence[bytes | bytearray | memoryview]) -> list[str]:
        """:meth:`put` each of ``blobs`` in one trip to a worker thread, fsyncing each
        directory once at the end rather than once per blob."""
        return await asyncio.to_thread(self._put_many_sync, blobs)

    def _put_many_sync(self, blobs: Sequence[bytes | bytearray | memoryview]) -> list[str]:
        digests: list[str] = []
        dirs: set[Path] = set()
        for data in blobs:
            digest, written = self._write(data)
            digests.append(digest)
            if written is not None:
                dirs.add(written)
        for directory in sorted(dirs):
            try:
                fsync_dir(directory)
            except OSError as exc:
                raise StorageError(
                    f"cannot make blob directory {directory} durable: {exc}"
                ) from exc
        return digests

    def put_sync(self, data: bytes | bytearray | memoryview) -> str:
        return self._put_many_sync([data])[0]

    def _write(self, data: bytes | bytearray | memoryview) -> tuple[str, Path | None]:
        """Write a blob's file (fsynced, renamed into place); returns its digest and the
        directory whose new entry still needs an fsync (None: it was there already)."""
        digest = sha256_hex(data)
        final = self.path(digest)
        if final.exists():
            return digest, None
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{digest}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(final)
        except OSError as exc:
            raise StorageError(f"cannot write blob {digest}: {exc}") from exc
        return digest, final.parent

    async def get(self, digest: str) -> bytes:
        return await asyncio.to_thread(self.get_sync, digest)

    def get_sync(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no blob {digest}", code="unknown_blob") from exc
        except OSError as exc:
            raise StorageError(f"cannot read blob {digest}: {exc}") from exc

    def exists(self, digest: str) -> bool:
        try:
            return self.path(digest).exists()
        except NotFound:
            return False


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (a created or renamed file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
