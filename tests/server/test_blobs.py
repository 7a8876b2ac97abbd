"""The content-addressed blob store: names are digests, writes are whole or absent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from server.errors import NotFound
from server.storage.blobs import LocalBlobStore


async def test_put_many_names_each_blob_by_its_digest_like_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    blobs = [b"alpha", b"beta" * 1000, b"alpha", b""]

    many = await store.put_many(blobs)

    assert many == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert [await store.put(b) for b in blobs] == many
    assert [await store.get(d) for d in many] == blobs
    assert not list((tmp_path / "blobs").rglob(".*.tmp"))  # no temporary file left behind


async def test_an_unknown_or_malformed_digest_is_not_found(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")

    with pytest.raises(NotFound):
        await store.get("0" * 64)
    with pytest.raises(NotFound):
        await store.get("../../etc/passwd")
