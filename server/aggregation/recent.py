"""The dedup window: the last ``dedup_window`` consumed update ids, kept ready to snapshot.

Every committed version stores a snapshot, and the window (10,000 ids by default) is
most of it. Packing it from a list of ``str`` touched each id object: at K = 10 and a
few hundred versions a second, ids scattered across a heap churned by upload bodies
cost a cache miss each, and packing the window took ~40% of the event loop (py-spy,
40 KB uploads). So each id is packed once, when it enters the window, into one
contiguous byte ring; a snapshot copies the ring (a memcpy) and the output is byte for
byte what packing the list would give.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import msgpack

from server.aggregation.snapshot import PackedArray

__all__ = ["RecentIds"]

# Drop the ring's consumed prefix once it is this large and at least half the ring:
# each byte is then moved at most once more, and the ring stays under ~2x the window.
_COMPACT_BYTES = 1 << 20


class RecentIds:
    """The last ``limit`` ids added, oldest first, with O(1) membership."""

    def __init__(self, limit: int, ids: Iterable[str] = ()) -> None:
        self._limit = limit
        self._ids: deque[str] = deque()
        self._set: set[str] = set()
        self._sizes: deque[int] = deque()  # packed length of each id in ``_ids``
        self._ring = bytearray()
        self._start = 0  # where the oldest id's packed bytes begin in ``_ring``
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self.extend(ids)

    def __contains__(self, update_id: object) -> bool:
        return update_id in self._set

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def extend(self, ids: Iterable[str]) -> None:
        """Add ``ids`` newest last, then forget the oldest beyond the limit."""
        for update_id in ids:
            packed = self._pack(update_id)
            self._ids.append(update_id)
            self._set.add(update_id)
            self._sizes.append(len(packed))
            self._ring += packed
        while len(self._ids) > self._limit:
            self._set.discard(self._ids.popleft())
            self._start += self._sizes.popleft()
        if self._start >= _COMPACT_BYTES and 2 * self._start >= len(self._ring):
            del self._ring[: self._start]
            self._start = 0

    def packed(self) -> PackedArray:
        """The window as a msgpack array, for :func:`~server.aggregation.snapshot.dump`."""
        return PackedArray(len(self._ids), bytes(memoryview(self._ring)[self._start :]))
