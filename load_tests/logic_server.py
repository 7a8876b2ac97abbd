"""The middle side of bench_ingest.py: asyncfl's upload use case without its durability.

One route, ``POST /ingest``, run like :mod:`load_tests.bare_server` (one process, the
default asyncio loop, no access log, backlog 4096, loopback only). Its handler is the
server's own: the body read (:func:`server.api.http.read_body`), then
:meth:`server.ingest.upload.Ingest.upload`, the very object ``asyncfl serve`` calls:
the strict parse, the session token's HMAC and task, the single-use claim in the
embedded session store, the deadline, base-version and staleness checks, the fold into
the task's :class:`~server.tasks.local.LocalAggregation` (validation, weights,
``saxpy``), the step and version cut every ``--goal`` updates (the params copied, the
state of the version taken; the params of a commit's newest version packed), the group
cut (the buffer's state copied, every ``--group-ms``), the acknowledgement and the metrics.

It runs with the server's allocator and garbage-collector settings
(``server.cli_serve._tune_malloc`` and ``_tune_gc``), so the two sides differ by
durability only. What it leaves out is durability: the version's database transaction
and blob writes, and the checkpoint write are skipped (their inputs are built all the
same). Against the bare handler it prices the FL logic; against the real endpoint, the
disk and the database.

    python -m load_tests.logic_server --port-file PATH --secret S --model linear_100k
        [--goal K] [--group-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from client_sdk.bundle import Manifest, decode_params
from client_sdk.wire import CONTENT_TYPE, pack
from load_tests.bare_server import serve
from load_tests.bundle import linear_bundle
from server.aggregation import ModelSpec
from server.api.http import read_body
from server.cli_serve import _tune_gc as tune_gc
from server.cli_serve import _tune_malloc as tune_malloc
from server.coordination.sessions import InProcessSessionStore
from server.coordination.tokens import TokenSigner
from server.errors import AsyncflError
from server.ingest.upload import Ingest
from server.metrics import Metrics
from server.storage.records import LedgerEntry, TaskRecord
from server.tasks.checkpoints import Checkpoint
from server.tasks.commits import CommitJob, wire_params
from server.tasks.config import TaskConfig
from server.tasks.local import LocalAggregation
from server.tasks.manager import TaskRuntime, worker_aggregator
from server.tasks.state import PublishedVersion, TaskState

MAX_BODY = 64 * 1024 * 1024
TASK = "bench"


class NoDatabase:
    """Stands in for the committer and the checkpoint log: accepts and writes nothing."""

    async def commit(self, batch: list[CommitJob], snapshot: bytes) -> None:
        wire_params(batch[-1])  # built all the same, as the committer does; not written

    async def write(self, meta: dict[str, Any], total: Any, params: Any = b"") -> int:
        return 0

    def restore_point(self, task_id: str, head: int) -> None:
        return None

    def keep(self, record: Checkpoint) -> None:
        return None


class NoLedger:
    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()

    def add(self, entries: list[LedgerEntry]) -> None:
        self.refused.update(e.reason or "" for e in entries)

    async def contains(self, update_id: str) -> bool:
        return False


class Catalog:
    def __init__(self, runtime: TaskRuntime, ledger: NoLedger) -> None:
        self._runtime = runtime
        self.ledger = ledger

    def get(self, task_id: str) -> TaskRuntime:
        if task_id != TASK:
            raise AsyncflError(f"unknown task {task_id!r}", code="unknown_task")
        return self._runtime


def task_state(model: str, goal: int) -> tuple[TaskState, list[np.ndarray[Any, Any]]]:
    """The bench task (a ``load_tests.bundle`` model, K = ``goal``) and its parameters."""
    parts = linear_bundle(model)
    manifest = Manifest.from_json(parts.manifest)
    params = decode_params(parts.params, manifest.params)
    config = TaskConfig.from_dict(
        {
            "concurrency": 10_000_000,
            "session_deadline_s": 3600,
            "aggregation": {"aggregation_goal": goal, "max_staleness": None},
        }
    )
    record = TaskRecord(TASK, time.time(), "active", "async", {}, model, {}, None, 0, 0)
    state = TaskState(
        record=record,
        config=config,
        manifest=manifest,
        spec=ModelSpec.from_arrays(params),
        published=PublishedVersion(0, "", b"", time.time()),
    )
    return state, params


async def build(secret: str, model: str, goal: int, group_ms: float) -> Ingest:
    state, params = task_state(model, goal)
    config = state.config
    ledger = NoLedger()
    no_db = NoDatabase()
    aggregator = worker_aggregator(params, config)  # as the server builds it
    local = LocalAggregation(
        state,
        aggregator,
        no_db,
        no_db,
        record_drops=ledger.add,
        group_interval_s=group_ms / 1000,
    )
    runtime = TaskRuntime(state, local=local)
    runtime.background.append(asyncio.create_task(local.run()))
    return Ingest(
        signer=TokenSigner(secret),
        sessions=InProcessSessionStore(),
        manager=Catalog(runtime, ledger),
        metrics=Metrics(),
        ledger_writer=ledger,  # type: ignore[arg-type]
    )


def create_app(ingest: Ingest) -> web.Application:
    refused: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        try:
            body = await read_body(request, MAX_BODY)
            ack = await ingest.upload(TASK, body)
        except AsyncflError as exc:
            refused[exc.code] += 1
            return web.json_response(exc.to_body(), status=exc.status)
        return web.Response(body=pack(ack), content_type=CONTENT_TYPE)

    async def report(app: web.Application) -> None:
        if refused:  # the bench treats any refusal as an invalid run: say which
            print(f"logic_server refused: {dict(refused)}", file=sys.stderr, flush=True)

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([web.post("/ingest", handle)])
    app.on_cleanup.append(report)
    return app


async def main_async(args: argparse.Namespace) -> None:
    ingest = await build(args.secret, args.model, args.goal, args.group_ms)
    tune_gc()  # after start-up, as asyncfl serve does
    await serve(args.port_file, create_app(ingest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--secret", required=True, help="the secret the session tokens use")
    parser.add_argument("--model", default="linear_100k", help="a load_tests.bundle model")
    parser.add_argument("--goal", type=int, default=100, help="K: a version per K updates")
    parser.add_argument("--group-ms", type=float, default=5.0, help="the group interval")
    args = parser.parse_args()
    tune_malloc()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
