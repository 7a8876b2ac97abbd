"""An on-device example store: a SQLite file with retention by age and by count.

The app adds examples as they happen (``add``/``add_many``); the store keeps at most
``max_examples`` (the newest) no older than ``max_age_s``, and is a
:class:`~client_sdk.data.DataSource` for training and evaluation. Each example is
stored as raw bytes of fixed-shape ``x`` and ``y`` arrays; the shapes and dtypes are
recorded in the file and checked when it is reopened. Connections are opened per call
(WAL mode), so the app may add examples while the client trains in a worker thread.
Every ``sqlite3`` error surfaces as :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.data import Array, Batch
from client_sdk.errors import ConfigError, StorageError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    x BLOB NOT NULL,
    y BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_created_at ON examples (created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_CHUNK = 500  # ids per SELECT ... IN (...), below SQLite's variable limit


class ExampleStore:
    def __init__(
        self,
        path: str | Path,
        *,
        x_shape: Sequence[int],
        x_dtype: str = "float32",
        y_shape: Sequence[int] = (),
        y_dtype: str = "int64",
        max_examples: int = 10_000,
        max_age_s: float | None = 30 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_examples < 1 or (max_age_s is not None and max_age_s <= 0):
            raise ConfigError("max_examples must be >= 1 and max_age_s > 0 (or None)")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder of {self.path}: {exc}") from exc
        self.max_examples = max_examples
        self.max_age_s = max_age_s
        self._clock = clock
        self._x = (tuple(int(d) for d in x_shape), np.dtype(x_dtype))
        self._y = (tuple(int(d) for d in y_shape), np.dtype(y_dtype))
        layout = json.dumps(
            {"x": [list(self._x[0]), x_dtype], "y": [list(self._y[0]), y_dtype]}, sort_keys=True
        )
        with self._connect() as db:
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('layout', ?)", (layout,))
            (stored,) = db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        if stored != layout:
            raise StorageError(f"{self.path} holds examples of another layout: {stored}")

    # -- writing ------------------------------------------------------------------------
    def add(self, x: Array, y: Array | int | float) -> None:
        """Store one example (``x`` of ``x_shape``, ``y`` of ``y_shape``)."""
        self.add_many(np.asarray(x)[None], np.asarray(y)[None])

    def add_many(self, xs: Array, ys: Array) -> None:
        """Store a batch of examples, then apply retention."""
        xs = self._check(np.asarray(xs), self._x, "x")
        ys = self._check(np.asarray(ys), self._y, "y")
        if len(xs) != len(ys):
            raise ConfigError(f"xs has {len(xs)} rows but ys has {len(ys)}")
        now = self._clock()
        rows = [(now, xs[i].tobytes(), ys[i].tobytes()) for i in range(len(xs))]
        with self._connect() as db:
            db.executemany("INSERT INTO examples (created_at, x, y) VALUES (?, ?, ?)", rows)
            self._prune(db, now)

    def prune(self) -> int:
        """Apply retention now; returns how many examples were deleted."""
        with self._connect() as db:
            return self._prune(db, self._clock())

    def _prune(self, db: sqlite3.Connection, now: float) -> int:
        deleted = 0
        if self.max_age_s is not None:
            cur = db.execute("DELETE FROM examples WHERE created_at < ?", (now - self.max_age_s,))
            deleted += cur.rowcount
        cur = db.execute(
            "DELETE FROM examples WHERE id NOT IN "
            "(SELECT id FROM examples ORDER BY id DESC LIMIT ?)",
            (self.max_examples,),
        )
        return deleted + cur.rowcount

    # -- reading (DataSource) -------------------------------------------------------------
    def count(self) -> int:
        with self._connect() as db:
            (n,) = db.execute(
                "SELECT count(*) FROM examples WHERE created_at >= ?", (self._cutoff(),)
            ).fetchone()
        return min(int(n), self.max_examples)

    def batches(self, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        with self._connect() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM examples WHERE created_at >= ? ORDER BY id DESC LIMIT ?",
                    (self._cutoff(), self.max_examples),
                )
            ]
        ids.reverse()
        if seed is not None:
            ids = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
        for start in range(0, len(ids), batch_size):
            rows = self._rows(ids[start : start + batch_size])
            if rows:  # examples pruned meanwhile are skipped
                yield self._stack(rows)

    def _rows(self, ids: list[int]) -> list[tuple[bytes, bytes]]:
        found: dict[int, tuple[bytes, bytes]] = {}
        with self._connect() as db:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT id, x, y FROM examples WHERE id IN ({marks})"
                found.update((i, (x, y)) for i, x, y in db.execute(query, chunk))
        return [found[i] for i in ids if i in found]

    def _stack(self, rows: list[tuple[bytes, bytes]]) -> Batch:
        (x_shape, x_dtype), (y_shape, y_dtype) = self._x, self._y
        try:
            x = np.frombuffer(b"".join(r[0] for r in rows), dtype=x_dtype)
            y = np.frombuffer(b"".join(r[1] for r in rows), dtype=y_dtype)
            return x.reshape(len(rows), *x_shape), y.reshape(len(rows), *y_shape)
        except (ValueError, TypeError) as exc:  # a row of the wrong size: a corrupt file
            raise StorageError(f"example store {self.path} holds a corrupt row: {exc}") from exc

    # -- plumbing -------------------------------------------------------------------------
    def _cutoff(self) -> float:
        return -math.inf if self.max_age_s is None else self._clock() - self.max_age_s

    @staticmethod
    def _check(array: Array, layout: tuple[tuple[int, ...], np.dtype[Any]], name: str) -> Array:
        shape, dtype = layout
        if array.shape[1:] != shape:
            raise ConfigError(f"{name} rows must have shape {list(shape)}, got {array.shape[1:]}")
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ConfigError(f"{name} must be {dtype.name}, got {array.dtype.name}")
        return np.ascontiguousarray(array, dtype=dtype)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10.0)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open example store {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: commit on success, roll back on error
                yield db
        except sqlite3.Error as exc:
            raise StorageError(f"example store {self.path}: {exc}") from exc
        finally:
            db.close()
