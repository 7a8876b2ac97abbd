"""A bounded HTTP cache on disk: graphs by sha256, parameters by task and version.

Each entry is two files in one folder: the body, and a small JSON sidecar with its key,
ETag, sha256 and expiry (``None``: immutable, never revalidated). Reads verify the
sha256, so a torn or corrupt file is a miss, not a crash. Entries past their expiry are
revalidated with ``If-None-Match`` (a 304 costs no body bytes). The folder is kept under
``max_bytes`` by evicting the least recently used entries; a hit refreshes the body's
mtime, which is the LRU order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client_sdk.errors import StorageError

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True)
class CacheEntry:
    body: bytes
    etag: str | None
    expires_at: float | None  # wall clock; None: immutable

    def fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def expiry(cache_control: str, now: float) -> float | None:
    """When an answer with this ``Cache-Control`` needs revalidation (None: never)."""
    control = cache_control.lower()
    if "immutable" in control:
        return None
    if "no-cache" in control or "no-store" in control:
        return now
    match = _MAX_AGE.search(control)
    return now + int(match.group(1)) if match else now


class DiskCache:
    def __init__(
        self, root: Path, *, max_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._clock = clock
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create cache folder {self.root}: {exc}") from exc

    def _paths(self, key: str) -> tuple[Path, Path]:
        # readable prefix + a digest of the exact key: distinct keys never share files
        name = f"{_SAFE.sub('_', key)[:80]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        return self.root / f"{name}.bin", self.root / f"{name}.json"

    def get(self, key: str) -> CacheEntry | None:
        """The verified entry for ``key``, or None (missing, torn or corrupt)."""
        body_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            body = body_path.read_bytes()
        except (OSError, ValueError):
            return None
        if (
            not isinstance(meta, dict)
            or meta.get("key") != key
            or meta.get("sha256") != hashlib.sha256(body).hexdigest()
        ):
            self.delete(key)
            return None
        with contextlib.suppress(OSError):
            os.utime(body_path)  # most recently used
        expires = meta.get("expires_at")
        return CacheEntry(body, meta.get("etag"), None if expires is None else float(expires))

    def put(self, key: str, body: bytes, *, etag: str | None, cache_control: str) -> None:
        """Store ``body`` (atomically: a crash leaves the old entry or none), then evict."""
        if len(body) > self.max_bytes:
            return  # would evict everything and still not fit
        body_path, meta_path = self._paths(key)
        meta = {
            "key": key,
            "etag": etag,
            "sha256": hashlib.sha256(body).hexdigest(),
            "expires_at": expiry(cache_control, self._clock()),
        }
        try:
            _write(body_path, body)
            _write(meta_path, json.dumps(meta).encode())
        except OSError as exc:
            raise StorageError(f"cannot write cache entry {key}: {exc}") from exc
        self.evict(keep=body_path)

    def refresh(self, key: str, cache_control: str) -> None:
        """A 304 said our copy is current: move its expiry forward."""
        meta_path = self._paths(key)[1]
        try:
            meta = json.loads(meta_path.read_text())
            meta["expires_at"] = expiry(cache_control, self._clock())
            _write(meta_path, json.dumps(meta).encode())
        except (OSError, ValueError, TypeError):
            self.delete(key)

    def delete(self, key: str) -> None:
        for path in self._paths(key):
            with contextlib.suppress(OSError):  # a leftover is verified away on read
                path.unlink(missing_ok=True)

    def size(self) -> int:
        """Bytes of all bodies (what ``max_bytes`` bounds)."""
        return sum(size for _, size, _ in self._bodies())

    def evict(self, keep: Path | None = None) -> None:
        """Drop least recently used entries until the bodies fit in ``max_bytes``."""
        bodies = self._bodies()
        total = sum(size for _, size, _ in bodies)
        for _, size, path in sorted(bodies):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
            total -= size

    def _bodies(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every body file."""
        out = []
        try:
            paths = list(self.root.glob("*.bin"))
        except OSError as exc:
            raise StorageError(f"cannot list cache folder {self.root}: {exc}") from exc
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue  # deleted meanwhile
            out.append((stat.st_mtime, stat.st_size, path))
        return out


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
