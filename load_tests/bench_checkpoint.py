"""A group's checkpoint cost, on the event loop and in all.

    python load_tests/bench_checkpoint.py [--model linear_100k] [--goal 10] [--per-group 7]
        [--groups-per-commit 10] [--groups 400] [--log-fsync always] [--json]

Drives the embedded leader (:class:`server.tasks.local.LocalAggregation`, built as
``load_tests/logic_server.py`` builds it) the way the ingest bench loads it: ``--per-group``
uploads folded, then the group cut and its checkpoint written to a real
:class:`~server.tasks.checkpoints.CheckpointLog` (fsync per ``--log-fsync``), and every
``--groups-per-commit`` groups the versions of durable checkpoints handed to a committer
that writes nothing (the database's share is ``bench_commit.py``'s). Its defaults are
K = 10 at ~1,400 uploads/s with 5 ms groups and 50 ms commits: most cuts are whole (the
parameters too: versions wait for their commit). Reports, per group, the event loop's
thread CPU of the cut and its write (``time.thread_time()``: what it takes from request
handling), the whole process's CPU (the writer thread included) and the wall time; the
uploads' folds are outside the clocks. Checks at the end that the newest record restores
every folded update.
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
from pathlib import Path
from typing import Any

import numpy as np

from load_tests.logic_server import NoDatabase, NoLedger, task_state
from server.storage.records import LedgerEntry
from server.tasks.checkpoints import CheckpointLog
from server.tasks.local import LocalAggregation
from server.tasks.manager import worker_aggregator


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    state, params = task_state(args.model, args.goal)
    log = CheckpointLog(directory, args.log_fsync)
    ledger = NoLedger()
    local = LocalAggregation(
        state, worker_aggregator(params, state.config), NoDatabase(), log, record_drops=ledger.add
    )
    rng = np.random.default_rng(0)
    shapes = local.aggregator.spec.shapes
    update = [rng.normal(0, 0.01, s).astype(np.float32) for s in shapes]
    loop_s = process_s = wall_s = 0.0
    whole = folded = 0
    for group in range(args.groups):
        for _ in range(args.per_group):
            folded += 1
            entry = LedgerEntry(
                f"u{folded}",
                state.id,
                "device",
                time.time(),
                "accepted",
                base_version=local.aggregator.params_version,
                num_examples=10,
            )
            local.fold(entry, update, time.time())
        whole += bool(local._ready or local._jobs)  # versions wait: the cut is whole
        started = (time.thread_time(), time.process_time(), time.perf_counter())
        await local._cut()
        loop_s += time.thread_time() - started[0]
        process_s += time.process_time() - started[1]
        wall_s += time.perf_counter() - started[2]
        if (group + 1) % args.groups_per_commit == 0:
            await local._commit_ready()
    latest = log.read_latest()
    log.close()
    held = {str(e["id"]) for e in latest.meta["entries"]} if latest is not None else set()
    if held != set(local.pending):
        raise SystemExit("the newest checkpoint does not hold exactly the buffered updates")
    return {
        "model": args.model,
        "params": int(local.aggregator.spec.total_size),
        "goal": args.goal,
        "per_group": args.per_group,
        "groups": args.groups,
        "whole_groups": whole,
        "log_fsync": args.log_fsync,
        "loop_cpu_us_per_group": round(1e6 * loop_s / args.groups, 1),
        "process_cpu_us_per_group": round(1e6 * process_s / args.groups, 1),
        "wall_us_per_group": round(1e6 * wall_s / args.groups, 1),
        "process_cpu_us_per_upload": round(1e6 * process_s / folded, 1),
        "versions": local.aggregator.params_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="linear_100k", help="a load_tests.bundle model")
    parser.add_argument("--goal", type=int, default=10, help="K: a version per K updates")
    parser.add_argument("--per-group", type=int, default=7, help="uploads folded a group")
    parser.add_argument("--groups-per-commit", type=int, default=10)
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--log-fsync", choices=("always", "interval", "never"), default="always")
    parser.add_argument("--data-dir", type=Path, help="where the checkpoint slots go")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    if not args.json:
        print(
            f"{result['process_cpu_us_per_group']:.0f} us of CPU a group "
            f"({result['loop_cpu_us_per_group']:.0f} on the loop), "
            f"{result['whole_groups']} of {result['groups']} whole",
            flush=True,
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
