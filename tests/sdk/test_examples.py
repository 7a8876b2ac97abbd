"""The on-device example store: a SQLite file with retention by age and by count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from client_sdk import ConfigError, ExampleStore, StorageError


def _store(path: Path, clock: list[float], **kwargs: object) -> ExampleStore:
    return ExampleStore(path, x_shape=(3,), clock=lambda: clock[0], **kwargs)  # type: ignore[arg-type]


def test_examples_survive_reopening_and_come_back_in_batches(tmp_path: Path) -> None:
    clock = [0.0]
    xs = np.arange(30, dtype=np.float32).reshape(10, 3)
    _store(tmp_path / "ex.db", clock).add_many(xs, np.arange(10))

    store = _store(tmp_path / "ex.db", clock)
    batches = list(store.batches(4, seed=1))

    assert store.count() == 10
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert sorted(y.tolist()) == list(range(10))
    assert np.array_equal(x, xs[y])  # rows stay paired with their labels
    assert y.tolist() != list(range(10))  # shuffled


def test_retention_keeps_the_newest_examples_up_to_the_count(tmp_path: Path) -> None:
    clock = [0.0]
    store = _store(tmp_path / "ex.db", clock, max_examples=3)

    for i in range(5):
        store.add(np.full(3, i, np.float32), i)

    assert store.count() == 3
    assert sorted(np.concatenate([y for _, y in store.batches(10)]).tolist()) == [2, 3, 4]


def test_retention_forgets_examples_older_than_the_age_limit(tmp_path: Path) -> None:
    clock = [0.0]
    store = _store(tmp_path / "ex.db", clock, max_age_s=100.0)
    store.add(np.zeros(3, np.float32), 0)
    clock[0] = 50.0
    store.add(np.ones(3, np.float32), 1)

    clock[0] = 120.0
    visible = store.count()
    deleted = store.prune()

    assert (visible, deleted, store.count()) == (1, 1, 1)


def test_a_file_of_another_layout_is_refused(tmp_path: Path) -> None:
    ExampleStore(tmp_path / "ex.db", x_shape=(3,))

    with pytest.raises(StorageError, match="another layout"):
        ExampleStore(tmp_path / "ex.db", x_shape=(4,))


def test_a_corrupt_file_raises_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "ex.db").write_bytes(b"this is not a database" * 100)

    with pytest.raises(StorageError):
        ExampleStore(tmp_path / "ex.db", x_shape=(3,))


def test_examples_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path / "ex.db", x_shape=(3,))

    with pytest.raises(ConfigError):
        store.add(np.zeros(4, np.float32), 0)
