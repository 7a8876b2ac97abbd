"""Every Redis key asyncfl uses, in one place.

All keys start with a namespace (``ASYNCFL_REDIS_NAMESPACE``, default ``afl``) so that
several deployments, or test runs, can share one Redis. Keys of one task share the hash
tag ``{task}`` so a Redis Cluster keeps them on one slot (scripts touch several at once).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "afl"


@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE

    def active_sessions(self, task_id: str) -> str:
        """ZSET: session id -> deadline (UNIX s), the sessions holding a concurrency slot."""
        return f"{self.namespace}:{{{task_id}}}:active"

    def session(self, task_id: str, sid: str) -> str:
        """HASH: an upload's state (``state``, ``ack``, ``reason``; while uploading the
        claim's ``owner`` token and ``claimed_at``), made at first upload."""
        return f"{self.namespace}:{{{task_id}}}:session:{sid}"

    def participation(self, task_id: str, device_id: str) -> str:
        """STRING: the version of the device's last check-in to a DP task."""
        return f"{self.namespace}:{{{task_id}}}:participation:{device_id}"

    def partials(self, task_id: str) -> str:
        """STREAM: replicas' partial sums of accepted updates (fields ``m`` meta, ``b`` sums)."""
        return f"{self.namespace}:{{{task_id}}}:partials"

    def accepted(self, task_id: str) -> str:
        """COUNTER: updates ever accepted into the task's partial stream (every replica)."""
        return f"{self.namespace}:{{{task_id}}}:accepted"

    def round(self, task_id: str) -> str:
        """HASH: the open sync round (``id``, ``version``, ``deadline``, ``open``, ``goal``,
        ``cohort``, ``selected``, ``received``), written by the leader."""
        return f"{self.namespace}:{{{task_id}}}:round"

    def round_members(self, task_id: str, round_id: int) -> str:
        """SET: devices selected into a sync round (expires with the round)."""
        return f"{self.namespace}:{{{task_id}}}:round:{round_id}:members"

    def revoked(self) -> str:
        """SET: revoked device ids; admission and upload claims refuse them."""
        return f"{self.namespace}:revoked"

    def leader(self, task_id: str) -> str:
        """STRING with TTL: the id of the aggregator leading the task (its lease)."""
        return f"{self.namespace}:{{{task_id}}}:leader"

    def fence(self, task_id: str) -> str:
        """COUNTER: the fencing token; every new lease takes the next value."""
        return f"{self.namespace}:{{{task_id}}}:fence"

    def rate(self, device_id: str) -> str:
        """STRING with TTL: a device's rate-limit state (GCRA theoretical arrival time)."""
        return f"{self.namespace}:rate:{device_id}"

    def aggregators(self) -> str:
        """ZSET: aggregator id -> heartbeat expiry, the live aggregation workers."""
        return f"{self.namespace}:aggregators"

    def events(self) -> str:
        """PUB/SUB channel: task created, version committed, task paused or resumed."""
        return f"{self.namespace}:events"

    def pattern(self) -> str:
        """Every key of this namespace (for clean-up in tests and tools)."""
        return f"{self.namespace}:*"
