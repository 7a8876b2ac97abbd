"""The upload use case: :class:`Ingest` decides an update's fate, folds it into the task's
sink (the embedded leader's aggregator, or a replica's partial) and answers once durable."""

from __future__ import annotations

from server.ingest.partials import PartialShipper, ReplicaPartials
from server.ingest.upload import Ingest, check_deadline, session_claims

__all__ = ["Ingest", "PartialShipper", "ReplicaPartials", "check_deadline", "session_claims"]
