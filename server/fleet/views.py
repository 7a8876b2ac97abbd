"""The documents the admin API serves about a task's fleet, built from a TaskRollup.

- :func:`version_docs`: per version, held-out and federated accuracy and loss, the
  tiers that contributed, the best-worst tier accuracy gap and the version's cost;
- :func:`tier_table`: per tier, participation, staleness, federated accuracy, cost;
- :func:`cost_doc`: the task's cost in total and by tier;
- :func:`timeline_doc`: updates and check-ins per time bucket;
- :func:`staleness_doc`: the histogram of applied updates' staleness.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from server.fleet.cost import CostSums
from server.fleet.rollup import BUCKET_S, EvalCell, TaskRollup, TierCell, VersionView
from server.fleet.tiers import OTHER, kept_tiers, normalize_tier, shown_tier

GAP_WINDOW = 5  # versions pooled per tier for the gap (one version's evaluations are few)
TIER_EVAL_WINDOW = 10  # newest versions with evaluations a tier's accuracy pools
TAIL_VERSIONS = 8  # versions re-sent on every incremental read (late metrics)
TIER_EVAL_SCAN = 200  # newest versions scanned for a tier's evaluations


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _eval_doc(cell: EvalCell | None) -> dict[str, Any] | None:
    if cell is None or not cell.examples:
        return None
    return {
        "loss": _round(cell.loss),
        "accuracy": _round(cell.accuracy),
        "devices": cell.devices,
        "examples": int(cell.examples),
    }


def gap(accuracy: Mapping[str, float | None]) -> dict[str, Any] | None:
    """The best and the worst tier by accuracy and the difference (two tiers or more)."""
    known = {t: a for t, a in accuracy.items() if a is not None and t != OTHER}
    if len(known) < 2:
        return None
    best = max(known, key=lambda t: (known[t], t))
    worst = min(known, key=lambda t: (known[t], t))
    return {"best": best, "worst": worst, "gap": round(known[best] - known[worst], 6)}


def version_docs(
    rollup: TaskRollup, *, after_version: int = -1, tail: int = TAIL_VERSIONS
) -> list[dict[str, Any]]:
    """Versions after ``after_version`` (and the newest ``tail`` always), oldest first."""
    versions = sorted(rollup.versions)
    cutoff = min(after_version, (versions[-1] - tail) if versions else after_version)
    window: deque[dict[str, EvalCell]] = deque(maxlen=GAP_WINDOW)
    docs = []
    # only the GAP_WINDOW versions before the first one sent matter for its window
    first = max(0, bisect_right(versions, cutoff) - GAP_WINDOW)
    for number in versions[first:]:
        view = rollup.versions[number]
        window.append(view.evals)
        if number <= cutoff:
            continue
        docs.append(_version_doc(rollup, view, window))
    return docs


def _version_doc(
    rollup: TaskRollup, view: VersionView, window: deque[dict[str, EvalCell]]
) -> dict[str, Any]:
    pooled: dict[str, EvalCell] = {}
    for evals in window:
        for tier, cell in evals.items():
            pooled.setdefault(tier, EvalCell()).add(cell)
    everyone = EvalCell()
    for cell in view.evals.values():
        everyone.add(cell)
    cost = CostSums()
    for tier_cell in view.tiers.values():
        cost.add(tier_cell.cost)
    cost_doc = cost.to_dict(rollup.model.grid_g_per_kwh)
    return {
        "version": view.version,
        "created_at": view.created_at,
        "num_updates": view.num_updates,
        "mean_staleness": _round(view.mean_staleness),
        "heldout": view.heldout,
        "federated": _eval_doc(everyone),
        "tiers": {
            tier: {
                "updates": cell.updates,
                "mean_staleness": _round(cell.mean_staleness),
                "accuracy": _round(view.evals[tier].accuracy) if tier in view.evals else None,
            }
            for tier, cell in sorted(view.tiers.items())
        },
        "gap": gap({t: c.accuracy for t, c in pooled.items()}),
        "cost": {
            k: cost_doc[k] for k in ("train_s", "energy_j", "co2e_g", "bytes_up", "bytes_down")
        },
    }


def _tier_accuracy(rollup: TaskRollup) -> dict[str, EvalCell]:
    """Each tier's evaluations pooled over its newest TIER_EVAL_WINDOW versions."""
    pooled: dict[str, EvalCell] = {}
    seen: Counter[str] = Counter()
    for number in sorted(rollup.versions, reverse=True)[:TIER_EVAL_SCAN]:
        for tier, cell in rollup.versions[number].evals.items():
            if seen[tier] < TIER_EVAL_WINDOW:
                seen[tier] += 1
                pooled.setdefault(tier, EvalCell()).add(cell)
    return pooled


def tier_table(rollup: TaskRollup, enrolled: Mapping[str | None, int]) -> list[dict[str, Any]]:
    """One row per tier (the heaviest MAX_TIERS by name, the rest as ``other``)."""
    enrolled_by: Counter[str] = Counter()
    for raw, count in enrolled.items():
        enrolled_by[normalize_tier(raw)] += count
    accuracy = _tier_accuracy(rollup)
    names = set(rollup.totals) | set(rollup.devices) | set(accuracy)
    weights = {t: float(rollup.totals[t].updates if t in rollup.totals else 0) for t in names}
    kept = kept_tiers(weights)
    cells: dict[str, TierCell] = {}
    devices: dict[str, set[str]] = {}
    evals: dict[str, EvalCell] = {}
    enrolled_shown: Counter[str] = Counter()
    for tier in names:
        name = shown_tier(tier, kept)
        cell = cells.setdefault(name, TierCell())
        total = rollup.totals.get(tier)
        if total is not None:
            cell.updates += total.updates
            cell.staleness_sum += total.staleness_sum
            cell.staleness_n += total.staleness_n
            cell.examples += total.examples
            cell.cost.add(total.cost)
        devices.setdefault(name, set()).update(rollup.devices.get(tier, ()))
        if tier in accuracy:
            evals.setdefault(name, EvalCell()).add(accuracy[tier])
        enrolled_shown[name] += enrolled_by.get(tier, 0)
    rows = []
    grid = rollup.model.grid_g_per_kwh
    for name in sorted(cells):
        cell, count = cells[name], len(devices[name])
        cost = cell.cost.to_dict(grid)
        rows.append(
            {
                "tier": name,
                "devices": count,
                "enrolled": enrolled_shown[name],
                "updates": cell.updates,
                "participation": _round(cell.updates / count) if count else None,
                "mean_staleness": _round(cell.mean_staleness),
                "federated": _eval_doc(evals.get(name)),
                "power_w": None if name == OTHER else rollup.model.power_of(name),
                "energy_j": cost["energy_j"],
                "kwh": cost["kwh"],
                "co2e_g": cost["co2e_g"],
                "train_s": cost["train_s"],
                "bytes_up": cost["bytes_up"],
                "bytes_down": cost["bytes_down"],
            }
        )
    return rows


def cost_doc(rollup: TaskRollup) -> dict[str, Any]:
    total = CostSums()
    by_tier: dict[str, dict[str, Any]] = {}
    grid = rollup.model.grid_g_per_kwh
    for tier, cell in sorted(rollup.totals.items()):
        total.add(cell.cost)
        by_tier[tier] = cell.cost.to_dict(grid)
    return {"total": total.to_dict(grid), "by_tier": by_tier, "model": rollup.model.to_dict()}


def timeline_doc(rollup: TaskRollup, *, since: int = 0, bucket_s: int = BUCKET_S) -> dict[str, Any]:
    """Per bucket of ``bucket_s`` seconds (a multiple of BUCKET_S) from ``since``:
    updates accepted (by arrival, once applied or dropped), applied (by version commit),
    dropped, rejected by reason, check-ins admitted and turned away by reason."""
    bucket_s = max(BUCKET_S, bucket_s - bucket_s % BUCKET_S)
    out: dict[int, dict[str, Any]] = {}

    def slot(t: float) -> dict[str, Any]:
        start = int(t) - int(t) % bucket_s
        found = out.get(start)
        if found is None:
            found = out[start] = {
                "t": start,
                "accepted": 0,
                "applied": 0,
                "dropped": 0,
                "rejected": {},
                "admitted": 0,
                "turned_away": {},
            }
        return found

    for bucket, count in rollup.arrivals.items():
        if bucket >= since:
            slot(bucket)["accepted"] += count
    for bucket, counts in rollup.ledger.items():
        if bucket < since:
            continue
        row = slot(bucket)
        for key, count in counts.items():
            status, _, reason = key.partition(":")
            if status == "rejected":
                row["rejected"][reason] = row["rejected"].get(reason, 0) + count
            elif status == "dropped":
                row["accepted"] += count
                row["dropped"] += count
    for number in sorted(rollup.versions, reverse=True):  # newest first: stop at since
        view = rollup.versions[number]
        if view.created_at is not None and view.created_at < since:
            break
        if view.created_at is not None and view.version > 0:
            slot(view.created_at)["applied"] += view.num_updates
    for bucket, counts in rollup.checkins.items():
        if bucket < since:
            continue
        row = slot(bucket)
        for result, count in counts.items():
            if result == "admitted":
                row["admitted"] += count
            else:
                row["turned_away"][result] = row["turned_away"].get(result, 0) + count
    return {"bucket_s": bucket_s, "buckets": [out[t] for t in sorted(out)]}


def checkin_totals(rollup: TaskRollup) -> dict[str, Any]:
    totals: Counter[str] = Counter(rollup.checkins_before)
    for counts in rollup.checkins.values():
        totals.update(counts)
    turned = {r: n for r, n in sorted(totals.items()) if r != "admitted"}
    return {
        "admitted": totals["admitted"],
        "turned_away": sum(turned.values()),
        "by_reason": turned,
    }


def staleness_doc(rollup: TaskRollup) -> list[dict[str, int]]:
    return [{"staleness": s, "count": n} for s, n in sorted(rollup.staleness.items())]


def latest_gap(rollup: TaskRollup) -> dict[str, Any] | None:
    """The newest version's gap (tiers pooled over its last GAP_WINDOW versions) that
    exists, with that version; None when no window has evaluations from two tiers."""
    versions = sorted(rollup.versions)
    for end in range(len(versions), 0, -1):
        pooled: dict[str, EvalCell] = {}
        for number in versions[max(0, end - GAP_WINDOW) : end]:
            for tier, cell in rollup.versions[number].evals.items():
                pooled.setdefault(tier, EvalCell()).add(cell)
        found = gap({t: c.accuracy for t, c in pooled.items()})
        if found is not None:
            return {**found, "version": versions[end - 1]}
    return None
