"""The dedup window: the last ``dedup_window`` consumed update ids, in memory.

It lets an aggregator refuse an update it folded recently without asking anyone. It is
not part of a stored state: after a restart the ledger (every applied update, committed
with its version) answers the same question.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

__all__ = ["RecentIds"]


class RecentIds:
    """The last ``limit`` ids added, oldest first, with O(1) membership."""

    def __init__(self, limit: int, ids: Iterable[str] = ()) -> None:
        self._limit = limit
        self._ids: deque[str] = deque()
        self._set: set[str] = set()
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
            self._ids.append(update_id)
            self._set.add(update_id)
        while len(self._ids) > self._limit:
            self._set.discard(self._ids.popleft())
