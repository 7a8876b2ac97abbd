"""Distributed-mode scale figures on this machine, measured honestly.

``python load_tests/redis_scale.py --json`` starts API replicas on loopback against the
local Redis and PostgreSQL (a fresh database and Redis namespace, removed afterwards)
and measures, in one run:

1. Redis memory per active session: ``used_memory`` before and after holding
   ``--sessions`` (default 1,000,000) admitted sessions in the task's admission set;
2. check-ins per second through one replica while those sessions are held (every
   check-in is a real admission: signature check, rate limit, the admission script
   over the million-entry set, a signed session token);
3. uploads per second through one replica, then through two (same client, same
   concurrency; each upload uses its own session and is validated, folded into the
   replica's partial and shipped to the Redis stream before it is acknowledged), and in
   each phase the bytes Redis received per accepted update (``INFO stats``
   ``total_net_input_bytes``: sessions, claims and partials together) and the CPU the
   leading aggregator spent per update until it had merged them (from ``/proc``).

The load generator shares the machine's two cores with the replicas, Redis and
PostgreSQL, so the figures are a floor for the software, not a ceiling. Last line
printed (JSON)::

    {"sessions", "redis_bytes_per_session", "checkins_per_s", "uploads_per_s_1_replica",
     "uploads_per_s_2_replicas", "update_bytes", "redis_input_bytes_per_update",
     "leader_cpu_us_per_update", ...}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgpack
import numpy as np
import psutil
from redis.asyncio import Redis

from client_sdk.wire import encode_tensor, pack
from server.admin_client import AdminClient
from server.cluster import LocalCluster
from server.coordination.keys import Keys
from server.process import ServerProcess

TASK = "scale"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


def log(message: str) -> None:
    print(f"[redis-scale] {message}", file=sys.stderr, flush=True)


async def hold_sessions(redis: Redis, keys: Keys, count: int) -> int:
    """Fill the admission set with ``count`` live sessions; return Redis bytes added."""
    before = int((await redis.info("memory"))["used_memory"])
    expires = time.time() + 3600
    batch = 10_000
    for start in range(0, count, batch):
        members = {uuid.uuid4().hex: expires for _ in range(min(batch, count - start))}
        await redis.zadd(keys.active_sessions(TASK), members)
    after = int((await redis.info("memory"))["used_memory"])
    return after - before


async def enroll(http: aiohttp.ClientSession, server: ServerProcess, n: int) -> list[str]:
    tokens = []
    for _ in range(n):
        async with http.post(
            f"{server.url}/v1/devices/enroll",
            data=pack({"enrollment_key": server.enrollment_key}),
            headers=MSGPACK,
        ) as resp:
            tokens.append(msgpack.unpackb(await resp.read())["device_token"])
    return tokens


async def checkins(
    http: aiohttp.ClientSession, urls: list[str], tokens: list[str], seconds: float, conns: int
) -> tuple[int, list[tuple[str, int]]]:
    """Check in as fast as ``conns`` workers can for ``seconds``; return the count and
    the sessions with the version each is for."""
    sessions: list[tuple[str, int]] = []
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            url = urls[(i + n) % len(urls)]
            token = tokens[(i * 7919 + n) % len(tokens)]
            n += 1
            async with http.post(
                f"{url}/v1/tasks/{TASK}/checkin",
                data=pack({}),
                headers={**MSGPACK, "Authorization": f"Bearer {token}"},
            ) as resp:
                body = msgpack.unpackb(await resp.read())
            if resp.status == 200 and body.get("admitted"):
                sessions.append((body["session"], int(body["version"])))

    await asyncio.gather(*(worker(i) for i in range(conns)))
    return len(sessions), sessions


async def uploads(
    http: aiohttp.ClientSession, urls: list[str], bodies: list[bytes], conns: int
) -> float:
    """Upload every body once, round-robin over ``urls``; return uploads per second."""
    queue = list(enumerate(bodies))
    failures: Counter[str] = Counter()

    async def worker() -> None:
        while queue:
            i, body = queue.pop()
            async with http.post(
                f"{urls[i % len(urls)]}/v1/tasks/{TASK}/updates", data=body, headers=MSGPACK
            ) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    error = msgpack.unpackb(raw).get("error", {}) if raw else {}
                    failures[f"{resp.status} {error.get('code')}"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{sum(failures.values())} uploads failed: {dict(failures)}")
    return len(bodies) / elapsed


async def redis_input_bytes(redis: Redis) -> int:
    info: Any = await redis.info("stats")
    return int(info["total_net_input_bytes"])


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def caught_up(http: aiohttp.ClientSession, server: ServerProcess, token: str) -> None:
    """Wait until the leader merged all but a buffer short of K of what was accepted."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    for _ in range(600):
        async with http.get(f"{server.url}/admin/v1/tasks/{TASK}", headers=headers) as resp:
            status = await resp.json()
        if status["updates_accepted"] - status["updates_applied"] < status["aggregation_goal"]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the aggregator did not catch up in 60 s")


def update_bodies(sessions: list[tuple[str, int]], shapes: list[list[int]]) -> list[bytes]:
    rng = np.random.default_rng(0)
    tensors = [encode_tensor(rng.standard_normal(s).astype(np.float32) * 1e-3) for s in shapes]
    return [
        pack({"session": s, "base_version": v, "num_examples": 10, "tensors": tensors})
        for s, v in sessions
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db_name = f"asyncfl_scale_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    root = Path(tempfile.mkdtemp(prefix="asyncfl-scale-"))
    namespace = f"afl-scale-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    redis = Redis.from_url(REDIS_URL)
    try:
        with LocalCluster(
            root,
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}",
            redis_url=REDIS_URL,
            namespace=namespace,
            exports_dir=args.exports_dir or Path.home() / ".cache" / "asyncfl" / "exports",
            extra_env={
                "ASYNCFL_DEVICE_RATE_PER_S": "100000",
                "ASYNCFL_DEVICE_RATE_BURST": "100000",
                "ASYNCFL_SESSION_DEADLINE_S": "3600",
            },
        ) as cluster:
            await asyncio.to_thread(cluster.start, 2, 1)
            first, second = cluster.replicas
            (leader,) = cluster.aggregators
            async with AdminClient(first.url, cluster.admin_token) as client:
                await client.create_task(
                    TASK,
                    model=args.model,
                    config={"concurrency": 10_000_000, "aggregation": {"max_staleness": None}},
                )
            log(f"holding {args.sessions:,} sessions in Redis")
            added = await hold_sessions(redis, keys, args.sessions)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                tokens = await enroll(http, first, 200)
                log(f"check-ins through one replica for {args.seconds}s")
                count, _ = await checkins(http, [first.url], tokens, args.seconds, args.conns)
                checkin_rate = count / args.seconds
                async with http.get(
                    f"{first.url}/v1/tasks/{TASK}/versions/0/params",
                    headers={"Authorization": f"Bearer {tokens[0]}"},
                ) as resp:
                    shapes = [t["shape"] for t in msgpack.unpackb(await resp.read())]
                results, redis_bytes, leader_cpu = {}, {}, {}
                for label, urls in (("1", [first.url]), ("2", [first.url, second.url])):
                    _, sessions = await checkins(http, urls, tokens, 2.0, args.conns)
                    bodies = update_bodies(sessions[: args.uploads], shapes)
                    await caught_up(http, first, cluster.admin_token)
                    log(f"{len(bodies)} uploads through {label} replica(s)")
                    before_bytes, before_cpu = (
                        await redis_input_bytes(redis),
                        cpu_seconds(leader.pid),
                    )
                    results[label] = await uploads(http, urls, bodies, args.conns)
                    redis_bytes[label] = (await redis_input_bytes(redis) - before_bytes) / len(
                        bodies
                    )
                    await caught_up(http, first, cluster.admin_token)
                    leader_cpu[label] = (cpu_seconds(leader.pid) - before_cpu) / len(bodies)
            return {
                "sessions": args.sessions,
                "redis_bytes_per_session": round(added / args.sessions, 1),
                "checkins_per_s": round(checkin_rate, 1),
                "uploads_per_s_1_replica": round(results["1"], 1),
                "uploads_per_s_2_replicas": round(results["2"], 1),
                "update_bytes": len(bodies[0]) if bodies else 0,
                "redis_input_bytes_per_update": round(redis_bytes["2"], 1),
                "redis_input_bytes_per_update_1_replica": round(redis_bytes["1"], 1),
                "leader_cpu_us_per_update": round(leader_cpu["2"] * 1e6, 1),
                "leader_cpu_us_per_update_1_replica": round(leader_cpu["1"] * 1e6, 1),
                "model": args.model,
                "connections": args.conns,
            }
    finally:
        stale = [k async for k in redis.scan_iter(match=keys.pattern(), count=1000)]
        for i in range(0, len(stale), 1000):
            await redis.delete(*stale[i : i + 1000])
        await redis.aclose()
        admin = await asyncpg.connect(POSTGRES_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="check-in phase length")
    parser.add_argument("--uploads", type=int, default=2000, help="uploads per phase")
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--exports-dir", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
