"""Failover drill: kill -9 the leader, then pause the next one past its lease.

``python load_tests/failover.py --json`` starts on loopback two API replicas and two
aggregators against the local Redis and PostgreSQL (a fresh database and a fresh Redis
namespace, both removed afterwards), drives SDK clients (`client_sdk.Client`, the object
an app embeds) through both replicas, and:

1. kill -9s the aggregator leading the task while uploads flow, and times how long
   until another aggregator leads it again (``failover_s``: kill -> the new leader holds
   the lease and has replayed the stream);
2. starts a standby aggregator, SIGSTOPs the new leader for longer than its lease, lets
   the standby take over, and resumes it: a commit it attempts then carries a stale
   fencing token and PostgreSQL refuses it (``stale_commits_refused``); whether it
   attempts one is a race on resume (its lease tick may drop the task first), so the
   audit checks the outcome instead: every version records the token it was committed
   under, and a commit by the paused leader after the takeover would show as a token
   going back (``fence_regressions``; ``versions_by_fence`` shows each leader's).

``--variant replica`` instead kill -9s one of the two API replicas while its devices
upload and restarts it: what it acknowledged was shipped with the partial that
accepted it, what it had not shipped it never acknowledged.

It then stops the devices, waits for the last full buffers to be committed, and audits
every acknowledged update against the ledger (applied) and the stream after the last
committed position (buffered). Last line printed (JSON)::

    {"acked", "applied", "buffered", "duplicates", "lost", "failover_s",
     "stale_commits_refused", "fence_regressions", "versions_by_fence", ...}

Pass: applied + buffered == acked, duplicates == 0, lost == 0; for the leader drill also
failover_s <= lease TTL + 1 s, fence_regressions == 0 and versions under three tokens
(each leader committed) (the exit status says whether it passed).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from redis.asyncio import Redis

from client_sdk.client import Client
from client_sdk.errors import SdkError
from client_sdk.events import Event
from client_sdk.results import NoSlot
from server.admin_client import AdminClient
from server.clientfleet import ClientFleet
from server.cluster import LocalCluster
from server.coordination.keys import Keys
from server.coordination.partials import position_key
from server.modeling.datasets import load_dataset
from server.process import ServerProcess
from server.storage.database import create_engine

TASK = "failover"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def log(message: str) -> None:
    print(f"[failover] {message}", file=sys.stderr, flush=True)


class Drill:
    def __init__(self, args: argparse.Namespace, cluster: LocalCluster, redis: Redis) -> None:
        self.args = args
        self.cluster = cluster
        self.redis = redis
        self.keys = Keys(cluster.namespace)
        self.acked: dict[str, str] = {}  # update id -> stream position
        self.errors = 0
        self.stop = asyncio.Event()

    async def leader(self) -> str | None:
        value = await self.redis.get(self.keys.leader(TASK))
        return value.decode() if value else None

    def aggregator(self, node: str) -> ServerProcess:
        return next(a for a in self.cluster.aggregators if a.data_dir.name == node)

    async def wait_for_leader(self, exclude: str | None, timeout_s: float) -> tuple[str, float]:
        """Poll until a node other than ``exclude`` leads and says so on /metrics."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            node = await self.leader()
            if node and node != exclude and _leads(self.aggregator(node), TASK):
                return node, time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"no new leader within {timeout_s}s")

    async def devices(self) -> None:
        """SDK clients (:class:`client_sdk.Client`) on both replicas until ``stop``."""
        x, y, _, _ = load_dataset("digits")
        per_replica = self.args.devices // len(self.cluster.replicas)
        fleets = [
            ClientFleet(replica.url, TASK, on_event=self._event)
            for replica in self.cluster.replicas
        ]
        try:
            runners = []
            for r, fleet in enumerate(fleets):
                starts = [(i * 13) % (len(x) - 40) for i in range(per_replica)]
                await fleet.enroll(
                    self.cluster.enrollment_key,
                    [(x[s : s + 40], y[s : s + 40]) for s in starts],
                    seed=r * 1000,
                )
                runners += [self._run(device.client) for device in fleet.devices]
            await asyncio.gather(*runners)
        finally:
            for fleet in fleets:
                await fleet.close()

    def _event(self, device: int, event: Event) -> None:
        if event.kind == "upload":
            self.acked[str(event.data["update_id"])] = str(event.data.get("position"))

    async def _run(self, client: Client) -> None:
        while not self.stop.is_set():
            try:
                result = await client.run_once()
            except SdkError:
                self.errors += 1
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(result.retry_after if isinstance(result, NoSlot) else 0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db_name = f"asyncfl_failover_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
    root = Path(tempfile.mkdtemp(prefix="asyncfl-failover-"))
    namespace = f"afl-failover-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(REDIS_URL)
    exports = args.exports_dir or Path.home() / ".cache" / "asyncfl" / "exports"
    try:
        with LocalCluster(
            root,
            database_url=database_url,
            redis_url=REDIS_URL,
            exports_dir=exports,
            namespace=namespace,
            lease_ttl_s=args.lease_ttl,
            extra_env={"ASYNCFL_DEVICE_RATE_PER_S": "1000"},
        ) as cluster:
            log(f"starting 2 API replicas and 2 aggregators (lease TTL {args.lease_ttl}s)")
            await asyncio.to_thread(cluster.start, 2, 2)
            async with AdminClient(cluster.replicas[0].url, cluster.admin_token) as client:
                await client.create_task(
                    TASK,
                    model="logreg",
                    config={"concurrency": 64, "aggregation": {"aggregation_goal": 5}},
                )
            drill = Drill(args, cluster, redis)
            result = await _drill(drill, args)
            return await _audit(drill, database_url, result)
    finally:
        await _cleanup(redis, Keys(namespace), db_name)
        shutil.rmtree(root, ignore_errors=True)


async def _replica_drill(drill: Drill, args: argparse.Namespace) -> dict[str, Any]:
    """kill -9 an API replica while its devices upload, restart it, carry on."""
    fleet = asyncio.create_task(drill.devices())
    leader, _ = await drill.wait_for_leader(None, 30)
    await asyncio.sleep(args.phase_s)
    victim = drill.cluster.replicas[1]
    log(f"kill -9 the API replica {victim.data_dir.name} after {len(drill.acked)} acknowledged")
    victim.kill()
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await asyncio.to_thread(victim.restart)
    restart_s = time.monotonic() - started
    log(f"replica back after {restart_s:.2f}s")
    await asyncio.sleep(args.phase_s)
    drill.stop.set()
    await fleet
    return {"failover_s": 0.0, "replica_restart_s": round(restart_s, 3), "leaders": [leader]}


async def _drill(drill: Drill, args: argparse.Namespace) -> dict[str, Any]:
    if args.variant == "replica":
        return await _replica_drill(drill, args)
    fleet = asyncio.create_task(drill.devices())
    first, _ = await drill.wait_for_leader(None, 30)
    await asyncio.sleep(args.phase_s)
    log(f"kill -9 the leader {first} after {len(drill.acked)} acknowledged updates")
    drill.aggregator(first).kill()
    second, failover_s = await drill.wait_for_leader(first, args.lease_ttl + 10)
    log(f"{second} leads after {failover_s:.2f}s; starting a standby")
    await asyncio.to_thread(drill.cluster.add_aggregator)
    await asyncio.sleep(args.phase_s)
    paused = drill.aggregator(second)
    log(f"SIGSTOP {second} for {args.lease_ttl + 2:.1f}s (past its lease)")
    paused.signal(signal.SIGSTOP)
    third, _ = await drill.wait_for_leader(second, args.lease_ttl + 10)
    await asyncio.sleep(1.0)  # the new leader commits under its fence meanwhile
    log(f"{third} leads; resuming {second}")
    paused.signal(signal.SIGCONT)
    await asyncio.sleep(args.phase_s)
    drill.stop.set()
    await fleet
    return {"failover_s": round(failover_s, 3), "leaders": [first, second, third]}


async def _audit(drill: Drill, database_url: str, result: dict[str, Any]) -> dict[str, Any]:
    """Wait for the last full buffers to commit, then check every acknowledged update."""
    replica = drill.cluster.replicas[0]
    async with AdminClient(replica.url, drill.cluster.admin_token) as client:
        for _ in range(300):
            status = await client.status(TASK)
            goal = status["aggregation_goal"]
            if status["updates_accepted"] - status["updates_applied"] < goal:
                break
            await asyncio.sleep(0.1)
        log(f"audit: accepted {status['updates_accepted']}, applied {status['updates_applied']}")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            applied_rows = [
                r[0]
                for r in await conn.execute(
                    sa.text("SELECT id FROM updates WHERE task_id = :t AND status = 'applied'"),
                    {"t": TASK},
                )
            ]
            in_versions = (
                await conn.execute(
                    sa.text(
                        "SELECT coalesce(sum(num_updates), 0) FROM model_versions"
                        " WHERE task_id = :t"
                    ),
                    {"t": TASK},
                )
            ).scalar_one()
            head = (
                await conn.execute(
                    sa.text(
                        "SELECT queue_position FROM model_versions WHERE task_id = :t "
                        "ORDER BY version DESC LIMIT 1"
                    ),
                    {"t": TASK},
                )
            ).scalar_one()
            fences = [
                int(r[0])
                for r in await conn.execute(
                    sa.text(
                        "SELECT fence FROM model_versions WHERE task_id = :t AND version > 0"
                        " ORDER BY version"
                    ),
                    {"t": TASK},
                )
            ]
            statuses = {
                str(r[0]): str(r[1])
                for r in await conn.execute(
                    sa.text("SELECT id, status FROM updates WHERE task_id = :t"), {"t": TASK}
                )
            }
    finally:
        await engine.dispose()
    applied = set(applied_rows)
    acked = set(drill.acked)
    buffered = {
        uid
        for uid, pos in drill.acked.items()
        if uid not in applied and pos != "None" and position_key(pos) > position_key(head)
    }
    stale = sum(
        _metric(a, "asyncfl_stale_commits_refused_total")
        for a in drill.cluster.aggregators
        if a.proc is not None
    )
    return {
        "variant": drill.args.variant,
        "acked": len(acked),
        "applied": len(acked & applied),
        "buffered": len(buffered),
        "duplicates": (int(in_versions) - len(applied)) + (len(applied_rows) - len(applied)),
        "lost": len(acked - applied - buffered),
        # where the lost ones are: their ledger status, or "none" (no row)
        "lost_positions": sorted({drill.acked[u] for u in acked - applied - buffered})[:5],
        "head_position": head,
        "ledger_statuses": dict(Counter(statuses.values())),
        "lost_by_status": dict(
            Counter(statuses.get(u, "none") for u in acked - applied - buffered)
        ),
        "stale_commits_refused": int(stale),
        # a leader's commits carry its fencing token; a newer leader's token is larger, so
        # a commit by a leader paused past its lease would show as a token going back
        "fence_regressions": sum(b < a for a, b in itertools.pairwise(fences)),
        "versions_by_fence": dict(sorted(Counter(fences).items())),
        "lease_ttl_s": drill.cluster.lease_ttl_s,
        "device_errors": drill.errors,
        **result,
    }


def _metric(process: ServerProcess, name: str) -> float:
    try:
        with urllib.request.urlopen(f"{process.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))


def _leads(process: ServerProcess, task: str) -> bool:
    return _metric(process, "asyncfl_task_leader") >= 1


async def _cleanup(redis: Redis, keys: Keys, db_name: str) -> None:
    stale = [k async for k in redis.scan_iter(match=keys.pattern(), count=1000)]
    if stale:
        await redis.delete(*stale)
    await redis.aclose()
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--devices", type=int, default=24)
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--phase-s", type=float, default=4.0, help="traffic between events")
    parser.add_argument("--exports-dir", type=Path, default=None)
    parser.add_argument(
        "--variant",
        choices=("leader", "replica"),
        default="leader",
        help="kill -9 the leading aggregator (then SIGSTOP the next), or an API replica",
    )
    args = parser.parse_args()
    result = asyncio.run(run(args))
    ok = (
        result["applied"] + result["buffered"] == result["acked"]
        and result["duplicates"] == 0
        and result["lost"] == 0
    )
    if args.variant == "leader":
        ok = (
            ok
            and result["failover_s"] <= args.lease_ttl + 1.0
            and result["fence_regressions"] == 0
            and len(result["versions_by_fence"]) >= 3  # each of the three leaders committed
        )
    if not args.json:
        log("PASS" if ok else "FAIL")
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
