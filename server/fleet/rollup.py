"""One task's fleet figures, folded from grouped rows: per version, per tier, over time.

A :class:`TaskRollup` is filled incrementally (the repository reads only what is new:
versions after the last one folded, time buckets in a trailing window) and answers the
dashboard's and the admin API's questions from memory. Per-version detail is kept for
the newest :data:`MAX_VERSIONS` versions; task totals keep every version.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.fleet.cost import CostModel, CostSums
from server.fleet.rows import (
    OLDER,
    AppliedGroup,
    CheckinBucket,
    EvalGroup,
    LedgerBucket,
    VersionRow,
)
from server.fleet.tiers import normalize_tier

MAX_VERSIONS = 2000  # versions kept in detail per task
BUCKET_S = 10  # time buckets of the timelines
TIMELINE_KEEP_S = 6 * 3600


@dataclass
class TierCell:
    """Applied updates of one tier (in one version, or in total)."""

    updates: int = 0
    staleness_sum: float = 0.0
    staleness_n: int = 0
    examples: int = 0
    cost: CostSums = field(default_factory=CostSums)

    def add(self, group: AppliedGroup, model: CostModel, tier: str) -> None:
        self.updates += group.updates
        self.staleness_sum += group.staleness_sum
        self.staleness_n += group.staleness_n
        self.examples += group.examples
        self.cost.add(group_cost(group, model, tier))

    @property
    def mean_staleness(self) -> float | None:
        return self.staleness_sum / self.staleness_n if self.staleness_n else None


@dataclass
class EvalCell:
    devices: int = 0
    examples: float = 0.0
    loss_sum: float = 0.0
    correct_sum: float = 0.0
    scored: float = 0.0

    def add(self, other: EvalGroup | EvalCell) -> None:
        self.devices += other.devices
        self.examples += other.examples
        self.loss_sum += other.loss_sum
        self.correct_sum += other.correct_sum
        self.scored += other.scored

    @property
    def accuracy(self) -> float | None:
        return self.correct_sum / self.scored if self.scored else None

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.examples if self.examples else None


@dataclass
class VersionView:
    version: int
    created_at: float | None = None
    num_updates: int = 0
    mean_staleness: float | None = None
    heldout: dict[str, Any] | None = None
    tiers: dict[str, TierCell] = field(default_factory=dict)
    evals: dict[str, EvalCell] = field(default_factory=dict)


def group_cost(group: AppliedGroup, model: CostModel, tier: str) -> CostSums:
    """A group's cost, estimating the energy its unmetered updates used."""
    return CostSums(
        updates=group.updates,
        train_s=group.train_s,
        timed=group.timed,
        metered_j=group.metered_j,
        metered=group.metered,
        unmetered_train_s=group.unmetered_train_s,
        estimated_j=group.unmetered_train_s * model.power_of(tier),
        estimated=group.unmetered_timed,
        bytes_up=group.bytes_up,
        bytes_down=group.bytes_down,
    )


class TaskRollup:
    def __init__(self, task_id: str, model: CostModel) -> None:
        self.task_id = task_id
        self.model = model
        self.versions: dict[int, VersionView] = {}
        self.totals: dict[str, TierCell] = defaultdict(TierCell)
        self.devices: dict[str, set[str]] = defaultdict(set)
        self.staleness: Counter[int] = Counter()
        self.arrivals: Counter[int] = Counter()  # applied updates by bucket of arrival
        self.ledger: dict[int, Counter[str]] = {}  # refusals: bucket -> status[:reason] -> n
        self.checkins: dict[int, Counter[str]] = {}  # bucket -> result -> count
        self.checkins_before: Counter[str] = Counter()  # buckets older than those kept
        self.applied_upto = OLDER  # newest version whose applied updates are folded
        self.evals_head = 0  # the head when evaluations were last read
        self.generation = 0  # bumped by every refresh (documents built from it are cached)
        self.checkins_generation = 0  # bumped by every fold of check-ins written here

    # -- folding ------------------------------------------------------------------------
    def view(self, version: int) -> VersionView:
        found = self.versions.get(version)
        if found is None:
            found = self.versions[version] = VersionView(version)
        return found

    def add_versions(self, rows: Iterable[VersionRow]) -> None:
        """Version metadata and held-out metrics (new rows, or newer facts about old)."""
        for row in rows:
            view = self.view(row.version)
            view.created_at = row.created_at
            view.num_updates = row.num_updates
            view.mean_staleness = row.mean_staleness
            if row.metrics:
                view.heldout = {k: row.metrics.get(k) for k in ("loss", "accuracy", "count")}
        self._trim_versions()

    def add_applied(self, groups: Iterable[AppliedGroup], upto: int) -> None:
        """Fold applied updates of versions after :attr:`applied_upto`, up to ``upto``."""
        for group in groups:
            tier = normalize_tier(group.tier)
            self.totals[tier].add(group, self.model, tier)
            if group.version != OLDER:
                cells = self.view(group.version).tiers
                cells.setdefault(tier, TierCell()).add(group, self.model, tier)
        self.applied_upto = max(self.applied_upto, upto)
        self._trim_versions()

    def add_devices(self, pairs: Iterable[tuple[str, str | None]]) -> None:
        for device_id, tier in pairs:
            self.devices[normalize_tier(tier)].add(device_id)

    def add_arrivals(self, rows: Iterable[tuple[int | None, int, int]]) -> None:
        """Applied updates of newly folded versions: ``(staleness, bucket, count)``."""
        for staleness, bucket, count in rows:
            if staleness is not None:
                self.staleness[staleness] += count
            self.arrivals[bucket] += count

    def set_evaluations(self, groups: Iterable[EvalGroup], from_version: int) -> None:
        """Replace the evaluations of versions ``>= from_version`` by ``groups``."""
        for version, view in self.versions.items():
            if version >= from_version:
                view.evals.clear()
        for group in groups:
            if group.version < from_version:
                continue
            cells = self.view(group.version).evals
            cells.setdefault(normalize_tier(group.tier), EvalCell()).add(group)
        self._trim_versions()

    def set_ledger(self, rows: Iterable[LedgerBucket], since: int) -> None:
        """Replace the refusals' buckets ``>= since`` by ``rows`` (rejected, dropped)."""
        self._replace(self.ledger, since)
        for row in rows:
            key = row.status if row.status != "rejected" else f"rejected:{row.reason}"
            self.ledger.setdefault(row.bucket, Counter())[key] += row.count

    def set_checkins(self, rows: Iterable[CheckinBucket], since: int) -> None:
        self._replace(self.checkins, since)
        for row in rows:
            self.checkins.setdefault(row.bucket, Counter())[row.result] += row.count

    def add_checkin(self, bucket: int, result: str, count: int) -> None:
        """Check-ins counted here and just written (no need to read them back)."""
        self.checkins.setdefault(bucket, Counter())[result] += count

    def set_checkins_before(self, rows: Iterable[CheckinBucket]) -> None:
        """Totals of the buckets before the first window read (``bucket`` is ignored)."""
        self.checkins_before.clear()
        for row in rows:
            self.checkins_before[row.result] += row.count

    def trim(self, now: float) -> None:
        """Forget time buckets older than TIMELINE_KEEP_S (check-ins stay in the totals)."""
        oldest = int(now) - TIMELINE_KEEP_S
        for bucket in [b for b in self.ledger if b < oldest]:
            del self.ledger[bucket]
        for bucket in [b for b in self.arrivals if b < oldest]:
            del self.arrivals[bucket]
        for bucket in [b for b in self.checkins if b < oldest]:
            self.checkins_before.update(self.checkins.pop(bucket))

    @staticmethod
    def _replace(buckets: dict[int, Counter[str]], since: int) -> None:
        for bucket in [b for b in buckets if b >= since]:
            del buckets[bucket]

    def _trim_versions(self) -> None:
        if len(self.versions) > MAX_VERSIONS:
            for version in sorted(self.versions)[: len(self.versions) - MAX_VERSIONS]:
                del self.versions[version]

    @property
    def newest_version(self) -> int:
        return max(self.versions) if self.versions else OLDER
