"""The secure-aggregation side of :mod:`load_tests.bench_ingest`.

A masked upload's body differs per session (its sealed seed is bound to the task, the
session and the update id), so the load generator's one-head-many-tokens trick does not
apply: every body is built before timing, as a device would build it
(:func:`client_sdk.secagg.mask_update`, encoded by the SDK's own ``ServerApi``), and sent
by an aiohttp client. For a like-for-like baseline the same client sends plain float32
bodies, one per session, to a plain task on the same server in the same run:
``secagg_vs_plain`` is the price of secure aggregation on the upload path (the seed
registered with the mask service before the acknowledgement, the masked fold), with
nothing else different.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.api import Checkin, ServerApi
from client_sdk.secagg import FixedPoint, mask_update, seed_context
from client_sdk.transport import AiohttpTransport
from load_tests.bundle import BundleParts
from load_tests.loadgen import LoadResult, closed_loop
from load_tests.target import AdminApi, log

PLAIN_TASK, SECURE_TASK = "plain-bodies", "secure-bodies"
CLIP = 5.0


@dataclass(frozen=True)
class SecaggFigures:
    plain: LoadResult
    secure: LoadResult

    def fields(self) -> dict[str, Any]:
        plain, secure = self.plain.rps, self.secure.rps
        return {
            "secagg_rps": round(secure, 1),
            "secagg_p99_ms": round(self.secure.p99_ms, 2),
            "plain_bodies_rps": round(plain, 1),
            "secagg_vs_plain": round(secure / plain, 3) if plain else 0.0,
        }


def _config(goal: int, secure: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "concurrency": 10_000_000,
        "session_deadline_s": 3600,
        "eval_every": 0,
        "aggregation": {"aggregation_goal": goal, "max_staleness": None, "clip_norm": CLIP},
    }
    if secure:
        config["secure_aggregation"] = {"threshold": min(goal, 10)}
    return config


async def _checkins(api: ServerApi, task: str, devices: Sequence[str], count: int) -> list[Checkin]:
    answers: list[Checkin] = []
    todo = iter(range(count))

    async def worker() -> None:
        for i in todo:
            answer = await api.checkin(task, devices[i % len(devices)], {"sdk_version": "load"})
            if not answer.admitted:
                raise RuntimeError(f"check-in turned away ({answer.reason})")
            answers.append(answer)

    await asyncio.gather(*(worker() for _ in range(16)))
    return answers


def _bodies(
    api: ServerApi, task: str, answers: Sequence[Checkin], shapes: Sequence[tuple[int, ...]]
) -> list[bytes]:
    rng = np.random.default_rng(7)
    delta = [(rng.standard_normal(s) * 1e-3).astype(np.float32) for s in shapes]
    bodies = []
    for answer in answers:
        terms = answer.secure_aggregation
        if terms is None:
            bodies.append(api.encode_update(answer.session, answer.version, 32, delta, {}))
            continue
        context = seed_context(task, answer.session_id, answer.session_id)
        masked, sealed = mask_update(
            delta,
            FixedPoint.from_dict(terms["fixed_point"]),
            bytes.fromhex(terms["mask_key"]),
            context,
        )
        bodies.append(
            api.encode_masked_update(answer.session, answer.version, 32, masked, sealed, {})
        )
    return bodies


async def measure(
    base_url: str,
    admin: AdminApi,
    parts: BundleParts,
    devices: Sequence[str],
    *,
    goal: int,
    connections: int,
    seconds: float,
    rounds: int,
    per_round: int,
) -> SecaggFigures:
    """Alternate plain and masked bodies ``rounds`` times; the best round of each counts."""
    for task, secure in ((PLAIN_TASK, False), (SECURE_TASK, True)):
        await admin.create_task(task, parts, _config(goal, secure))
    transport = AiohttpTransport(base_url)
    api = ServerApi(transport)
    best: dict[str, LoadResult] = {}
    try:
        for i, (task, _) in itertools.product(
            range(rounds), ((PLAIN_TASK, False), (SECURE_TASK, True))
        ):
            await admin.quiescent(task)
            answers = await _checkins(api, task, devices, per_round)
            bodies = await asyncio.to_thread(_bodies, api, task, answers, parts.param_shapes)
            url = f"{base_url}/v1/tasks/{task}/updates"
            pairs = ((url, b) for b in bodies)
            result = await closed_loop(
                pairs, connections=connections, seconds=seconds, timeout_s=60
            )
            if result.non_2xx or result.socket_errors:
                raise RuntimeError(
                    f"{task}: {result.non_2xx} non-2xx, {result.socket_errors} socket errors"
                )
            log(
                f"  round {i + 1} {task}: {result.rps:7.1f}/s, p99 {result.p99_ms:.1f} ms "
                f"({result.requests} uploads)"
            )
            if task not in best or result.rps > best[task].rps:
                best[task] = result
    finally:
        await transport.close()
    return SecaggFigures(best[PLAIN_TASK], best[SECURE_TASK])
