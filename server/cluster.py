"""A distributed asyncfl on loopback: API replicas and aggregators as child processes
sharing one PostgreSQL database, one Redis namespace and one blob folder.

Used by the failover drill, the scale scripts and the distributed tests; every process
is started and stopped by its PID (see :class:`~server.process.ServerProcess`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from types import TracebackType

from server.process import ServerProcess


class LocalCluster:
    def __init__(
        self,
        root: Path,
        *,
        database_url: str,
        redis_url: str,
        namespace: str | None = None,
        exports_dir: Path | None = None,
        lease_ttl_s: float = 3.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.namespace = namespace or f"afl-{secrets.token_hex(4)}"
        self.admin_token = secrets.token_urlsafe(24)
        self.enrollment_key = secrets.token_urlsafe(24)
        self.secret_key = secrets.token_urlsafe(24)
        self.lease_ttl_s = lease_ttl_s
        self.env = {
            "ASYNCFL_DATABASE_URL": database_url,
            "ASYNCFL_REDIS_URL": redis_url,
            "ASYNCFL_REDIS_NAMESPACE": self.namespace,
            "ASYNCFL_AUTO_MIGRATE": "true",
            "ASYNCFL_BLOB_DIR": str(root / "blobs"),
            "ASYNCFL_EXPORTS_DIR": str(exports_dir or root / "exports"),
            "ASYNCFL_LEASE_TTL_S": str(lease_ttl_s),
            **(extra_env or {}),
        }
        self.replicas: list[ServerProcess] = []
        self.aggregators: list[ServerProcess] = []

    def _process(self, command: str, name: str) -> ServerProcess:
        return ServerProcess(
            self.root / name,
            env={**self.env, "ASYNCFL_NODE_ID": name},
            admin_token=self.admin_token,
            enrollment_key=self.enrollment_key,
            secret_key=self.secret_key,
            command=command,
        )

    def add_replica(self) -> ServerProcess:
        process = self._process("serve", f"api{len(self.replicas)}").start()
        self.replicas.append(process)
        return process

    def add_aggregator(self) -> ServerProcess:
        process = self._process("aggregator", f"agg{len(self.aggregators)}").start()
        self.aggregators.append(process)
        return process

    def start(self, replicas: int = 2, aggregators: int = 2) -> LocalCluster:
        for _ in range(replicas):
            self.add_replica()
        for _ in range(aggregators):
            self.add_aggregator()
        return self

    def stop(self) -> None:
        for process in self.replicas + self.aggregators:
            process.stop(timeout_s=15)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
