"""Asynchronous secure aggregation: the mask service (the stand-in for Papaya's TEE), its
store and keys, the server's client of it, and a task's configuration.

The server only ever holds masked updates and sums of at least K of them: devices mask
(:mod:`client_sdk.secagg`), the aggregator sums masked vectors modulo 2**32
(:mod:`server.aggregation.masked`), and the mask service, which alone can expand the
masks, releases the weighted sum of masks of a buffer of at least its threshold of
updates from distinct devices, each update in at most one release.
"""

from __future__ import annotations

from server.secagg.config import SecureAggregation

__all__ = ["SecureAggregation"]
