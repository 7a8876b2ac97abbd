"""A version commit's cost, on the event loop and in all.

    python load_tests/bench_commit.py [--versions 9] [--rows 10] [--commits 40] [--json]

Commits ``--commits`` batches of ``--versions`` consecutive versions, each applying
``--rows`` ledger rows, through :meth:`server.storage.tasks.TaskRepository.commit_versions`
(the fenced transaction a group commit ends in) into a fresh SQLite file (WAL,
``synchronous=FULL``, as the server runs it) or ``--database-url``. Reports, per ledger
row, the event loop's thread CPU (``time.thread_time()`` around each commit: what the
commit takes from request handling) and the whole process's CPU (the driver's thread
included), and the wall time per commit. The rows are built before the clock starts.

Its defaults are K = 10 at ~1,800 uploads/s with commits every 50 ms: ~90 rows in 9
versions a commit.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from server.storage.database import create_engine, ensure_schema
from server.storage.ledger import LedgerRepository
from server.storage.records import LedgerEntry, TaskRecord, VersionRecord
from server.storage.tasks import TaskRepository

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
TASK = "bench"


def _batch(
    first: int, versions: int, rows: int, fence: int
) -> list[tuple[VersionRecord, list[LedgerEntry]]]:
    now = time.time()
    batch = []
    for version in range(first, first + versions):
        applied = [
            LedgerEntry(
                uuid.uuid4().hex,
                TASK,
                uuid.uuid4().hex,
                now,
                "accepted",
                base_version=version - 1,
                num_examples=10,
                staleness=1,
                weight=1.0,
                train_s=1.0,
                bytes_up=400_000,
            )
            for _ in range(rows)
        ]
        record = VersionRecord(TASK, version, now, None, None, str(version), fence, rows, 1.0)
        batch.append((record, applied))
    return batch


async def measure(url: str, commits: int, versions: int, rows: int) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        await ensure_schema(engine, MIGRATIONS, auto_migrate=True)
        repo = TaskRepository(engine)
        now = time.time()
        task = TaskRecord(TASK, now, "active", "async", {}, "m", {}, None, 0, 0)
        await repo.create(task, VersionRecord(TASK, 0, now, "p", None, "0", 0, 0))
        fence = await repo.claim_fence(TASK)
        await repo.commit_versions(_batch(1, versions, rows, fence))  # warm the caches
        loop_s = process_s = wall_s = 0.0
        for i in range(commits):
            batch = _batch(1 + (i + 1) * versions, versions, rows, fence)
            t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            await repo.commit_versions(batch)
            loop_s += time.thread_time() - t0
            process_s += time.process_time() - p0
            wall_s += time.perf_counter() - w0
        head = (await repo.get(TASK)).current_version
        applied = await LedgerRepository(engine).counts(TASK)
    finally:
        await engine.dispose()
    total = commits * versions * rows
    return {
        "commits": commits,
        "versions_per_commit": versions,
        "rows_per_version": rows,
        "loop_cpu_us_per_row": round(loop_s / total * 1e6, 1),
        "process_cpu_us_per_row": round(process_s / total * 1e6, 1),
        "loop_cpu_ms_per_commit": round(loop_s / commits * 1e3, 3),
        "wall_ms_per_commit": round(wall_s / commits * 1e3, 3),
        "database": url.split(":", 1)[0],
        "head": head,  # the warm-up's versions and the timed ones, all committed
        "applied": applied.get("applied", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--versions", type=int, default=9, help="versions a commit")
    parser.add_argument("--rows", type=int, default=10, help="ledger rows a version")
    parser.add_argument(
        "--database-url", default=None, help="an empty database (default: a fresh SQLite file)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asyncfl-bench-commit-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.sqlite"
        result = asyncio.run(measure(url, args.commits, args.versions, args.rows))
    if not args.json:
        print(
            f"{args.versions} versions x {args.rows} rows: event loop "
            f"{result['loop_cpu_us_per_row']} us a row, process {result['process_cpu_us_per_row']}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
