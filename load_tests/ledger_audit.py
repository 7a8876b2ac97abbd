"""A ledger audit after a mixed run: ``python load_tests/ledger_audit.py [--json]``.

Starts an embedded ``asyncfl serve`` (SQLite, ``log_fsync=always``), creates a task of a
small linear model (K = 5, staleness at most 2) and has devices check in and upload a mix,
concurrently: good updates, good updates sent twice (a retry of the same session), and
updates the server must refuse (NaN, a wrong shape, a base version that is not the
session's, a stale one). Every session's fate is noted
from the answer the device got, then, with the server stopped, the ledger and the
buffer's checkpoint are read and compared id by id:

- every acknowledged update (each session acknowledged once, its retry answered
  ``duplicate``) is in exactly one place: one ``applied`` ledger row with its version, or
  the restored buffer (held for the next version), never both;
- every refused upload has exactly one ``rejected`` row with the code the device saw;
- the ledger holds no other row.

Last line printed (JSON): ``{"sessions", "acknowledged", "duplicates_answered",
"refused", "refused_by_code", "applied_rows", "buffered", "rejected_rows",
"missing", "extra", "mismatched_codes", "ok"}``; exit 1 unless ``ok``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make the repo root importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from client_sdk.wire import encode_tensors, pack, unpack
from load_tests.bundle import linear_bundle
from load_tests.target import AdminApi, enroll_many, log, start_server
from server.tasks.checkpoints import CheckpointLog

TASK = "audit"
KINDS = ("good", "good", "good", "retry", "nan", "shape", "base", "stale")
HEADERS = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}


def _body(kind: str, session: str, version: int, shapes: list[tuple[int, ...]]) -> bytes:
    rng = np.random.default_rng()
    tensors = [(rng.standard_normal(s) * 1e-3).astype(np.float32) for s in shapes]
    base = version
    if kind == "nan":
        tensors[0].flat[0] = np.nan
    elif kind == "shape":
        tensors[0] = np.zeros((3, 3), np.float32)
    elif kind == "base":
        base = version + 1  # not the version the session was issued for
    return pack(
        {
            "session": session,
            "base_version": base,
            "num_examples": 8,
            "encoding": "float32",
            "tensors": encode_tensors(tensors),
            "metrics": {},
        }
    )


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, token: str) -> tuple[int, Any]:
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, unpack(await resp.read())


async def drive(
    base: str, devices: list[str], shapes: list[tuple[int, ...]], sessions: int, seed: int
) -> list[dict[str, Any]]:
    """Each worker checks in and uploads one kind of body; returns what each session saw."""
    rng = random.Random(seed)
    seen: list[dict[str, Any]] = []
    todo = iter(range(sessions))
    stale: list[tuple[str, int, str]] = []  # sessions kept back to upload late

    async def worker(http: aiohttp.ClientSession, token: str) -> None:
        for _ in todo:
            status, answer = await _post(
                http, f"{base}/v1/tasks/{TASK}/checkin", pack({"sdk_version": "audit"}), token
            )
            if status != 200 or not answer.get("admitted"):
                await asyncio.sleep(0.05)
                continue
            session, version = str(answer["session"]), int(answer["version"])
            sid = str(answer["session_id"])
            kind = rng.choice(KINDS)
            if kind == "stale":  # upload it once the task has moved on
                stale.append((session, version, sid))
                continue
            await _upload(http, token, kind, session, version, sid)

    async def _upload(
        http: aiohttp.ClientSession, token: str, kind: str, session: str, version: int, sid: str
    ) -> None:
        url = f"{base}/v1/tasks/{TASK}/updates"
        body = _body(kind, session, version, shapes)
        status, answer = await _post(http, url, body, token)
        record = {"sid": sid, "kind": kind, "status": status, "answer": answer}
        if kind == "retry" and status == 200:
            again, repeat = await _post(http, url, body, token)
            record["retry"] = {"status": again, "duplicate": bool(repeat.get("duplicate"))}
        seen.append(record)

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(http, t) for t in devices))
        for (session, version, sid), token in zip(stale, devices * len(stale), strict=False):
            await _upload(http, token, "stale", session, version, sid)
    return seen


def read_ledger(data_dir: Path) -> tuple[dict[str, list[tuple[str, str | None, int | None]]], int]:
    """Ledger rows by id: (status, reason, applied_version); and the head version."""
    with sqlite3.connect(data_dir / "asyncfl.db") as db:
        rows: dict[str, list[tuple[str, str | None, int | None]]] = {}
        for uid, status, reason, applied in db.execute(
            "SELECT id, status, reason, applied_version FROM updates WHERE task_id = ?", (TASK,)
        ):
            rows.setdefault(uid, []).append((status, reason, applied))
        (head,) = db.execute("SELECT current_version FROM tasks WHERE id = ?", (TASK,)).fetchone()
    return rows, int(head)


def buffered_ids(data_dir: Path, head: int) -> list[str]:
    log_ = CheckpointLog(data_dir / "checkpoints" / TASK, "never")
    try:
        return log_.held(TASK, head)
    finally:
        log_.close()


def audit(seen: list[dict[str, Any]], data_dir: Path) -> dict[str, Any]:
    rows, head = read_ledger(data_dir)
    held = buffered_ids(data_dir, head)
    acked = {r["answer"]["update_id"]: r for r in seen if r["status"] == 200}
    refused = {r["sid"]: r for r in seen if 400 <= r["status"] < 500}
    missing, extra, mismatched = [], [], []
    for uid in acked:
        applied = [row for row in rows.get(uid, []) if row[0] == "applied"]
        places = len(applied) + held.count(uid)
        if places != 1 or len(rows.get(uid, [])) > 1:
            missing.append(uid)
    for sid, record in refused.items():
        got = rows.get(sid, [])
        code = record["answer"].get("error", {}).get("code")
        if len(got) != 1 or got[0][0] != "rejected":
            missing.append(sid)
        elif got[0][1] != code:
            mismatched.append({"id": sid, "answered": code, "ledger": got[0][1]})
    extra = sorted(set(rows) - set(acked) - set(refused))
    retries = [r["retry"] for r in seen if "retry" in r]
    return {
        "sessions": len(seen),
        "acknowledged": len(acked),
        "duplicates_answered": sum(1 for r in retries if r["status"] == 200 and r["duplicate"]),
        "retries": len(retries),
        "refused": len(refused),
        "refused_by_code": dict(
            sorted(Counter(r["answer"]["error"]["code"] for r in refused.values()).items())
        ),
        "applied_rows": sum(1 for v in rows.values() for row in v if row[0] == "applied"),
        "buffered": len(held),
        "rejected_rows": sum(1 for v in rows.values() for row in v if row[0] == "rejected"),
        "head_version": head,
        "missing": missing,
        "extra": extra,
        "mismatched_codes": mismatched,
        "other_statuses": sorted({r["status"] for r in seen} - {200} - set(range(400, 500))),
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    parts = linear_bundle("linear_10k")
    env = {"ASYNCFL_DEVICE_RATE_PER_S": "1000", "ASYNCFL_DEVICE_RATE_BURST": "1000"}
    server = start_server(work / "server", env)
    try:
        admin = AdminApi(server.url, server.admin_token)
        config = {
            "concurrency": 64,
            "eval_every": 0,
            "aggregation": {"aggregation_goal": 5, "max_staleness": 2},
        }
        await admin.create_task(TASK, parts, config)
        devices = await enroll_many(server.url, server.enrollment_key, args.devices)
        seen = await drive(server.url, devices, parts.param_shapes, args.sessions, args.seed)
        await admin.quiescent(TASK)
    finally:
        server.stop()
    result = audit(seen, work / "server")
    result["ok"] = not (
        result["missing"]
        or result["extra"]
        or result["mismatched_codes"]
        or result["other_statuses"]
        or result["duplicates_answered"] != result["retries"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asyncfl-audit-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    if not args.json:
        log(
            f"{result['acknowledged']} acknowledged, {result['refused']} refused, "
            f"{len(result['missing'])} missing, {len(result['extra'])} extra"
        )
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
