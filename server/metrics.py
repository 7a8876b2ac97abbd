"""Prometheus metrics, one registry per application (tests run several apps at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STALENESS_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144)


@dataclass(frozen=True)
class TaskMetrics:
    """A task's label children of the per-upload metrics, looked up once (``labels()``
    costs a lock and a dict lookup per call, on the hot path of every upload)."""

    accepted: Any
    duplicate: Any
    staleness: Any
    fold_seconds: Any


class Metrics:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskMetrics] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "asyncfl_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "asyncfl_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.checkins = Counter(
            "asyncfl_checkins", "Device check-ins by result", ["task", "result"], registry=r
        )
        self.updates = Counter(
            "asyncfl_updates",
            "Uploaded updates by status (accepted, duplicate, rejected)",
            ["task", "status"],
            registry=r,
        )
        self.rejections = Counter(
            "asyncfl_update_rejections",
            "Refused updates by reason",
            ["task", "reason"],
            registry=r,
        )
        self.staleness = Histogram(
            "asyncfl_update_staleness",
            "Staleness of accepted updates (versions)",
            ["task"],
            buckets=STALENESS_BUCKETS,
            registry=r,
        )
        self.fold_seconds = Histogram(
            "asyncfl_aggregation_fold_seconds",
            "Time to fold one update",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "asyncfl_version_commit_seconds",
            "Time to commit a version",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.version = Gauge(
            "asyncfl_model_version", "Newest committed version", ["task"], registry=r
        )
        self.active_sessions = Gauge(
            "asyncfl_active_sessions", "Sessions admitted and not finished", ["task"], registry=r
        )
        self.stale_commits = Counter(
            "asyncfl_stale_commits_refused",
            "Version commits the database refused: a newer leader holds the task's fence",
            ["task"],
            registry=r,
        )
        self.leading = Gauge(
            "asyncfl_task_leader",
            "1 while this process aggregates the task",
            ["task"],
            registry=r,
        )
        self.group_updates = Histogram(
            "asyncfl_ingest_group_updates",
            "Updates made durable together by one group commit or shipped partial",
            ["task"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.group_seconds = Histogram(
            "asyncfl_ingest_group_seconds",
            "Time to make one group durable (versions, checkpoint) or ship one partial",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.partial_bytes = Counter(
            "asyncfl_partial_bytes",
            "Bytes of partial sums shipped to Redis by this replica",
            ["task"],
            registry=r,
        )
        self.quarantined = Counter(
            "asyncfl_quarantined_updates",
            "Stream entries or updates quarantined as undecodable (poison records)",
            ["task"],
            registry=r,
        )
        self.ledger_quarantined = Counter(
            "asyncfl_ledger_rows_quarantined",
            "Ledger rows the database refused, kept in the quarantine file and stripped",
            ["task"],
            registry=r,
        )
        self.epsilon = Gauge(
            "asyncfl_privacy_epsilon",
            "Epsilon spent by a DP task at its delta (RDP accountant)",
            ["task"],
            registry=r,
        )
        self.epsilon_budget = Gauge(
            "asyncfl_privacy_epsilon_budget", "A DP task's target epsilon", ["task"], registry=r
        )
        self.buffered = Gauge(
            "asyncfl_updates_buffered",
            "Accepted updates not yet in a version",
            ["task"],
            registry=r,
        )

    def group_commit(self, task: str, updates: int, seconds: float) -> None:
        self.group_updates.labels(task).observe(updates)
        self.group_seconds.labels(task).observe(seconds)

    def partial_shipped(self, task: str, updates: int, size: int, seconds: float) -> None:
        self.group_commit(task, updates, seconds)
        self.partial_bytes.labels(task).inc(size)

    def task(self, task: str) -> TaskMetrics:
        children = self._tasks.get(task)
        if children is None:
            children = self._tasks[task] = TaskMetrics(
                accepted=self.updates.labels(task, "accepted"),
                duplicate=self.updates.labels(task, "duplicate"),
                staleness=self.staleness.labels(task),
                fold_seconds=self.fold_seconds.labels(task),
            )
        return children
