"""Device tiers: the class of hardware a device says it is (``device_info`` at enrollment).

A device reports its tier as ``device_info["tier"]`` (the SDK's ``ClientOptions.device_tier``
sets it) or ``device_info["device_class"]``. Tiers are device-supplied text, so they are
normalised to a short lower-case name or ``unknown``; and because they become Prometheus
labels and table rows, a task shows at most :data:`MAX_TIERS` of them, the rest summed
as ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

TIER_KEYS = ("tier", "device_class")
UNKNOWN = "unknown"
OTHER = "other"
MAX_TIERS = 16
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


def normalize_tier(raw: object) -> str:
    """A safe tier name for what a device reported (anything odd is ``unknown``)."""
    if not isinstance(raw, str):
        return UNKNOWN
    name = raw.strip().lower()
    return name if _NAME.match(name) else UNKNOWN


def tier_of(info: Mapping[str, Any]) -> str:
    """The tier a device's ``device_info`` names: ``tier``, else ``device_class``."""
    for key in TIER_KEYS:
        if info.get(key) is not None:
            return normalize_tier(info[key])
    return UNKNOWN


def kept_tiers(weights: Mapping[str, float], limit: int = MAX_TIERS) -> frozenset[str]:
    """The tiers shown by name: the ``limit - 1`` heaviest (ties by name), the rest are
    folded into ``other`` (when there are more than ``limit``)."""
    if len(weights) <= limit:
        return frozenset(weights)
    ranked = sorted(weights, key=lambda t: (-weights[t], t))
    return frozenset(ranked[: limit - 1])


def shown_tier(tier: str, kept: frozenset[str]) -> str:
    return tier if tier in kept else OTHER
