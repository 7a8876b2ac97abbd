"""Fleet accounting, pure (no I/O): device tiers, the cost of training, and one task's
figures per version, per tier and over time, folded from rows the database grouped.

:mod:`server.monitor` feeds it from :class:`server.storage.fleet.FleetRepository` and
serves it through the admin API, the dashboard and ``/metrics``.
"""

from server.fleet.cost import (
    CostModel,
    CostSums,
    PowerTableError,
    cost_fields,
    parse_power_table,
)
from server.fleet.rollup import MAX_VERSIONS, TaskRollup
from server.fleet.rows import (
    OLDER,
    AppliedGroup,
    CheckinBucket,
    EvalGroup,
    LedgerBucket,
    TierDevices,
    VersionRow,
)
from server.fleet.tiers import normalize_tier, tier_of
from server.fleet.views import (
    checkin_totals,
    cost_doc,
    gap,
    staleness_doc,
    tier_table,
    timeline_doc,
    version_docs,
)

__all__ = [
    "MAX_VERSIONS",
    "OLDER",
    "AppliedGroup",
    "CheckinBucket",
    "CostModel",
    "CostSums",
    "EvalGroup",
    "LedgerBucket",
    "PowerTableError",
    "TaskRollup",
    "TierDevices",
    "VersionRow",
    "checkin_totals",
    "cost_doc",
    "cost_fields",
    "gap",
    "normalize_tier",
    "parse_power_table",
    "staleness_doc",
    "tier_of",
    "tier_table",
    "timeline_doc",
    "version_docs",
]
