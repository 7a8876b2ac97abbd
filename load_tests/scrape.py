"""Sample the server's own ``/metrics`` in a background thread: what the dashboard's
requests cost it (event-loop CPU the fleet figures took, requests served) against the
process' whole CPU."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

DASHBOARD_ROUTES = (
    'route="/admin/v1/overview"',
    'route="/admin/v1/tasks/{task}/live"',
    'route="/admin/v1/tasks/{task}/history"',
    'route="/admin/v1/tasks/{task}/fleet"',
    'route="/admin/v1/tasks/{task}/cost"',
    'route="/admin/v1/tasks/{task}/timeline"',
    'route="/dashboard',
)


@dataclass(frozen=True)
class Sample:
    at: float
    dashboard_requests: float
    dashboard_cpu_s: float
    process_cpu_s: float


def parse(text: str) -> tuple[float, float, float]:
    requests = cpu = process = 0.0
    for line in text.splitlines():
        if line.startswith("asyncfl_http_requests_total{") and any(
            r in line for r in DASHBOARD_ROUTES
        ):
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith("asyncfl_dashboard_cpu_seconds_total "):
            cpu = float(line.rsplit(" ", 1)[1])
        elif line.startswith("process_cpu_seconds_total "):
            process = float(line.rsplit(" ", 1)[1])
    return requests, cpu, process


@dataclass
class MetricsScraper:
    url: str
    interval_s: float = 2.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)

    def start(self) -> MetricsScraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> Sample | None:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        found = Sample(time.time(), *parse(text))
        self.samples.append(found)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def between(self, start: float, end: float) -> dict[str, float] | None:
        """Growth of each figure between the first and last sample in ``[start, end]``."""
        window = [s for s in self.samples if start <= s.at <= end]
        if len(window) < 2:
            return None
        a, b = window[0], window[-1]
        return {
            "seconds": b.at - a.at,
            "dashboard_requests": b.dashboard_requests - a.dashboard_requests,
            "dashboard_cpu_s": b.dashboard_cpu_s - a.dashboard_cpu_s,
            "process_cpu_s": b.process_cpu_s - a.process_cpu_s,
        }
