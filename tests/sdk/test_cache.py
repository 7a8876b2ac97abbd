"""The disk cache: verified reads, HTTP freshness, atomic writes and an LRU size bound."""

from __future__ import annotations

import os
from pathlib import Path

from client_sdk.cache import DiskCache, expiry

IMMUTABLE = "public, max-age=31536000, immutable"


def test_an_entry_survives_a_new_cache_over_the_same_folder(tmp_path: Path) -> None:
    DiskCache(tmp_path, max_bytes=1000).put("graph-a", b"abc", etag='"a"', cache_control=IMMUTABLE)

    entry = DiskCache(tmp_path, max_bytes=1000).get("graph-a")

    assert entry is not None
    assert (entry.body, entry.etag, entry.expires_at) == (b"abc", '"a"', None)
    assert entry.fresh(now=1e12)


def test_a_corrupt_body_is_a_miss_and_is_removed(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=1000)
    cache.put("graph-a", b"abc", etag=None, cache_control=IMMUTABLE)
    (body,) = tmp_path.glob("*.bin")
    body.write_bytes(b"abd")

    assert cache.get("graph-a") is None
    assert list(tmp_path.glob("*")) == []


def test_the_least_recently_used_entries_go_first(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=250)
    for i, key in enumerate(("a", "b")):
        cache.put(key, bytes(100), etag=None, cache_control=IMMUTABLE)
        for path in tmp_path.glob(f"{key}-*.bin"):
            os.utime(path, (1000 + i, 1000 + i))
    assert cache.get("a") is not None  # a is now the most recently used

    cache.put("c", bytes(100), etag=None, cache_control=IMMUTABLE)

    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.size() <= 250


def test_an_entry_larger_than_the_bound_is_not_stored(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=10)

    cache.put("big", bytes(11), etag=None, cache_control=IMMUTABLE)

    assert cache.get("big") is None


def test_freshness_follows_cache_control(tmp_path: Path) -> None:
    now = 1000.0
    cache = DiskCache(tmp_path, max_bytes=1000, clock=lambda: now)
    cache.put("p", b"x", etag='"e"', cache_control="max-age=60")
    entry = cache.get("p")
    assert entry is not None and entry.fresh(now + 59) and not entry.fresh(now + 61)

    now = 2000.0
    cache.refresh("p", "max-age=60")  # a 304 revalidated it
    refreshed = cache.get("p")

    assert refreshed is not None and refreshed.fresh(2059.0)
    assert expiry("no-cache", 5.0) == 5.0
    assert expiry("", 5.0) == 5.0
    assert expiry(IMMUTABLE, 5.0) is None
