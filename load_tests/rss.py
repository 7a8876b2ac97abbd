"""Sample a process' resident set size and CPU time in a background thread (psutil)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class RssSampler:
    """``(unix time, RSS bytes, CPU seconds)`` of ``pid`` every ``interval_s``."""

    pid: int
    interval_s: float = 1.0
    samples: list[tuple[float, int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        process = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                cpu = process.cpu_times()
                rss = process.memory_info().rss
                self.samples.append((time.time(), rss, cpu.user + cpu.system))
            except psutil.Error:  # the process is gone
                return
            self._stop.wait(self.interval_s)

    def latest_mb(self) -> float:
        return self.samples[-1][1] / 2**20 if self.samples else 0.0

    def mean_mb(self, start: float, end: float) -> float | None:
        """Mean RSS in MiB over samples taken in ``[start, end)``; None when there are none."""
        window = [rss for t, rss, _ in self.samples if start <= t < end]
        return sum(window) / len(window) / 2**20 if window else None

    def cpu_share(self, start: float, end: float) -> float | None:
        """CPU seconds per second (1.0 = one core) over ``[start, end)``."""
        window = [(t, cpu) for t, _, cpu in self.samples if start <= t < end]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
