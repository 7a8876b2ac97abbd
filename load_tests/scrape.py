"""Sample the server's own ``/metrics`` in a background thread: what the dashboard
costs it (the CPU its figures, snapshots and stream writes took; requests served,
snapshots built, frames written to streams, rollup refreshes) against the process'
whole CPU."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

DASHBOARD_ROUTES = (
    'route="/admin/v1/overview"',
    'route="/admin/v1/tasks/{task}/live"',
    'route="/admin/v1/tasks/{task}/history"',
    'route="/admin/v1/tasks/{task}/fleet"',
    'route="/admin/v1/tasks/{task}/cost"',
    'route="/admin/v1/tasks/{task}/timeline"',
    'route="/admin/v1/tasks/{task}/snapshot"',
    'route="/admin/v1/tasks/{task}/stream"',  # counted when a stream ends
    'route="/dashboard',
)
COUNTERS = {
    "process_cpu_seconds_total": "process_cpu_s",
    "asyncfl_dashboard_snapshots_total": "snapshots",
    "asyncfl_dashboard_stream_frames_total": "frames",
    "asyncfl_dashboard_refreshes_total": "refreshes",
}


@dataclass(frozen=True)
class Sample:
    at: float
    dashboard_requests: float = 0.0
    dashboard_cpu_s: float = 0.0
    process_cpu_s: float = 0.0
    snapshots: float = 0.0
    frames: float = 0.0
    refreshes: float = 0.0
    streams: float = 0.0  # open now (a gauge)
    cpu_by_part: dict[str, float] = field(default_factory=dict)


_CPU_PART = re.compile(r'^asyncfl_dashboard_cpu_seconds_total\{part="(\w+)"\} (\S+)$')


def parse(text: str, at: float = 0.0) -> Sample:
    values: dict[str, Any] = {"dashboard_requests": 0.0, "dashboard_cpu_s": 0.0}
    parts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("asyncfl_http_requests_total{") and any(
            r in line for r in DASHBOARD_ROUTES
        ):
            values["dashboard_requests"] += float(line.rsplit(" ", 1)[1])
        elif found := _CPU_PART.match(line):
            parts[found[1]] = float(found[2])
            values["dashboard_cpu_s"] += float(found[2])
        elif line.startswith("asyncfl_dashboard_streams "):
            values["streams"] = float(line.rsplit(" ", 1)[1])
        else:
            name, _, value = line.partition(" ")
            if name in COUNTERS:
                values[COUNTERS[name]] = float(value)
    return Sample(at, cpu_by_part=parts, **values)


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
        found = parse(text, time.time())
        self.samples.append(found)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def between(self, start: float, end: float) -> dict[str, Any] | None:
        """Growth of each counter between the first and last sample in ``[start, end]``
        (``streams``: the most open at any sample)."""
        window = [s for s in self.samples if start <= s.at <= end]
        if len(window) < 2:
            return None
        a, b = window[0], window[-1]
        grown: dict[str, Any] = {name: getattr(b, name) - getattr(a, name) for name in GROWING}
        grown["cpu_by_part"] = {
            part: b.cpu_by_part[part] - a.cpu_by_part.get(part, 0.0) for part in b.cpu_by_part
        }
        return {"seconds": b.at - a.at, **grown, "streams": max(s.streams for s in window)}


GROWING = (
    "dashboard_requests",
    "dashboard_cpu_s",
    "process_cpu_s",
    "snapshots",
    "frames",
    "refreshes",
)
