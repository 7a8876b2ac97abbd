"""Updates a second per task, from the update queue's count sampled now and then."""

from __future__ import annotations

from collections import deque

WINDOW_S = 20.0


class RateMeter:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, task_id: str, now: float, count: int) -> None:
        samples = self._samples.setdefault(task_id, deque())
        samples.append((now, count))
        while len(samples) > 2 and now - samples[1][0] >= self._window_s:
            samples.popleft()

    def rate(self, task_id: str) -> float | None:
        """Per second over the window; None until two samples are taken."""
        samples = self._samples.get(task_id)
        if not samples or len(samples) < 2:
            return None
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return max(0, c1 - c0) / (t1 - t0) if t1 > t0 else None
