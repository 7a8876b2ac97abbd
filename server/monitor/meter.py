"""CPU spent on the dashboard's behalf, measured on the thread that spends it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuMeter:
    """Sums :func:`time.thread_time` over the blocks it measures.

    Measure only code that does not await: across an ``await`` the event loop runs
    other requests, whose CPU would be counted too. SQL executed in the database
    driver's thread is not counted (the load script measures the whole process too).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.blocks = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.seconds += time.thread_time() - started
            self.blocks += 1
