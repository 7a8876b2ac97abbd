"""The live document of a task page: its summary and everything its charts show.

The admin API's ``/live`` builds one per request with the page's own ``after_version``
and ``since``; the live snapshots (:mod:`server.monitor.snapshots`) build one for every
open page at once, with the newest versions and the trailing ``RESEND_S`` of the
timeline, which is what a page already holding the rest needs.
"""

from __future__ import annotations

from typing import Any

from server.fleet.rollup import BUCKET_S, TaskRollup
from server.fleet.views import (
    checkin_totals,
    cost_doc,
    latest_gap,
    staleness_doc,
    tier_table,
    timeline_doc,
    version_docs,
)
from server.monitor.service import Monitor

RESEND_S = 180  # the timeline a snapshot carries (refusals and check-ins land late)


def state_of(status: dict[str, Any]) -> str:
    """running, paused or budget_reached.

    Privacy budgets arrive with the differential-privacy work: its status field
    ``privacy`` = ``{"epsilon": spent, "epsilon_budget": budget, "budget_reached": bool}``
    (or a status of ``budget_reached``) is shown as is once the task status carries it.
    """
    privacy = status.get("privacy")
    if status.get("status") == "budget_reached" or (
        isinstance(privacy, dict) and privacy.get("budget_reached")
    ):
        return "budget_reached"
    return "paused" if status.get("status") == "paused" else "running"


def summary_doc(status: dict[str, Any], monitor: Monitor) -> dict[str, Any]:
    """A task's line in the overview and the head of its page, from its status."""
    last_eval = status.get("last_eval") or {}
    federated = status.get("federated_eval") or {}
    return {
        "id": status["id"],
        "model": status["model"],
        "mode": status["mode"],
        "state": state_of(status),
        "version": status["version"],
        "active_sessions": status["active_sessions"],
        "concurrency": status["concurrency"],
        "updates_per_s": monitor.updates_per_s(status["id"]),
        "updates_accepted": status["updates_accepted"],
        "updates_applied": status["updates_applied"],
        "commit_lag": status["updates_buffered"],
        "accuracy": last_eval.get("accuracy"),
        "accuracy_version": last_eval.get("version"),
        "federated_accuracy": federated.get("accuracy"),
        "privacy": status.get("privacy"),
    }


def fleet_part(monitor: Monitor, rollup: TaskRollup) -> dict[str, Any]:
    return {
        "tiers": monitor.memo(
            rollup, "tiers", lambda: tier_table(rollup, monitor.rollups.enrolled)
        ),
        "gap": monitor.memo(rollup, "gap", lambda: latest_gap(rollup)),
    }


def cost_part(monitor: Monitor, rollup: TaskRollup) -> dict[str, Any]:
    doc: dict[str, Any] = monitor.memo(rollup, "cost", lambda: cost_doc(rollup))
    return doc


def timeline_part(
    monitor: Monitor, rollup: TaskRollup, *, since: int, bucket_s: int = BUCKET_S
) -> dict[str, Any]:
    return {
        **timeline_doc(rollup, since=since, bucket_s=bucket_s),
        "staleness": monitor.memo(rollup, "staleness", lambda: staleness_doc(rollup)),
        "checkins": monitor.memo(rollup, "checkins", lambda: checkin_totals(rollup), checkins=True),
    }


def charts_doc(
    monitor: Monitor,
    rollup: TaskRollup,
    *,
    after_version: int,
    since: int,
    bucket_s: int = BUCKET_S,
) -> dict[str, Any]:
    """Everything of the live document but its time and summary."""
    return {
        **progress_part(monitor, rollup, after_version=after_version),
        "timeline": timeline_part(monitor, rollup, since=since, bucket_s=bucket_s),
    }


def progress_part(monitor: Monitor, rollup: TaskRollup, *, after_version: int) -> dict[str, Any]:
    """What changes only with a refresh: versions, tiers and their gap, cost."""
    return {
        "versions": version_docs(rollup, after_version=after_version),
        **fleet_part(monitor, rollup),
        "cost": cost_part(monitor, rollup),
    }


def recent_since(now: float) -> int:
    """The start of the bucket ``RESEND_S`` before ``now``."""
    start = int(now) - RESEND_S
    return start - start % BUCKET_S
