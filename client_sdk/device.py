"""A minimal device loop: enroll, check in, fetch artifacts, train, upload.

This is the loop the demo and the load tools run; :mod:`client_sdk.client` builds the
production client (eligibility, retries, disk caches, persistence) on the same calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from client_sdk import __version__
from client_sdk.api import Checkin, ServerApi
from client_sdk.bundle import Bundle, decode_params
from client_sdk.errors import ServerError
from client_sdk.trainer import Trainer, TrainPlan, TrainResult


@dataclass
class ArtifactCache:
    """Bundles by manifest digest and parameters by (task, version), in memory; devices
    in one process may share one (and one ONNX Runtime session per bundle)."""

    bundles: dict[str, tuple[Bundle, Trainer]] = field(default_factory=dict)
    params: dict[tuple[str, int], list[np.ndarray[Any, Any]]] = field(default_factory=dict)
    max_versions: int = 8
    graph_bytes_fetched: int = 0
    param_bytes_fetched: int = 0


@dataclass(frozen=True)
class RoundOutcome:
    status: str  # "uploaded" | "no_slot" | "rejected"
    retry_after: float = 0.0
    reason: str | None = None
    version: int = -1
    train: TrainResult | None = None
    ack: Mapping[str, Any] | None = None


def plan_from(checkin: Checkin) -> TrainPlan:
    plan = dict(checkin.plan or {})
    return TrainPlan(
        lr=float(plan["lr"]),
        batch_size=int(plan["batch_size"]),
        epochs=int(plan.get("epochs") or 1),
        max_steps=plan.get("max_steps"),
        time_budget_s=plan.get("time_budget_s"),
    )


class Device:
    def __init__(
        self,
        api: ServerApi,
        task: str,
        x: np.ndarray[Any, Any],
        y: np.ndarray[Any, Any],
        *,
        token: str = "",
        cache: ArtifactCache | None = None,
        threads: int = 1,
        seed: int = 0,
        extra_train_time: Callable[[], float] | None = None,
    ) -> None:
        self.api = api
        self.task = task
        self.x, self.y = x, y
        self.token = token
        self.cache = cache or ArtifactCache()
        self._threads = threads
        self._seed = seed
        self._rounds = 0
        self._extra_train_time = extra_train_time

    async def enroll(self, enrollment_key: str, info: Mapping[str, Any] | None = None) -> str:
        device_id, self.token = await self.api.enroll(enrollment_key, info or {})
        return device_id

    async def run_once(self) -> RoundOutcome:
        checkin = await self.api.checkin(self.task, self.token, {"sdk_version": __version__})
        if not checkin.admitted:
            return RoundOutcome("no_slot", retry_after=checkin.retry_after, reason=checkin.reason)
        bundle, trainer = await self._bundle(checkin)
        base = await self._params(checkin, bundle)
        plan = plan_from(checkin)
        self._rounds += 1
        result = await asyncio.to_thread(
            trainer.train, base, self.x, self.y, plan, seed=self._seed * 100_003 + self._rounds
        )
        if self._extra_train_time is not None:  # a simulated slower device
            await asyncio.sleep(self._extra_train_time())
        body = self.api.encode_update(
            checkin.session,
            checkin.version,
            result.num_examples,
            result.delta,
            {"loss": result.mean_loss, "steps": result.steps, "train_s": result.wall_s},
        )
        try:
            ack = await self.api.upload(self.task, body)
        except ServerError as exc:
            if exc.status in (409, 410, 422):
                return RoundOutcome(
                    "rejected", reason=exc.code, version=checkin.version, train=result
                )
            raise
        return RoundOutcome("uploaded", version=checkin.version, train=result, ack=ack)

    async def _bundle(self, checkin: Checkin) -> tuple[Bundle, Trainer]:
        artifacts = dict(checkin.artifacts or {})
        key = artifacts["manifest"]
        cached = self.cache.bundles.get(key)
        if cached is not None:
            return cached
        parts: dict[str, bytes] = {}
        for name in ("manifest", "train_step", "eval_step", "infer"):
            fetched = await self.api.fetch(f"/v1/artifacts/{artifacts[name]}", self.token)
            assert fetched.body is not None
            parts[name] = fetched.body
            self.cache.graph_bytes_fetched += len(fetched.body)
        manifest = parts.pop("manifest")
        bundle = Bundle.from_parts(manifest, parts, None)
        entry = (bundle, Trainer(bundle, threads=self._threads))
        self.cache.bundles[key] = entry
        return entry

    async def _params(self, checkin: Checkin, bundle: Bundle) -> list[np.ndarray[Any, Any]]:
        key = (self.task, checkin.version)
        cached = self.cache.params.get(key)
        if cached is not None:
            return cached
        fetched = await self.api.fetch(checkin.params_url, self.token)
        assert fetched.body is not None
        self.cache.param_bytes_fetched += len(fetched.body)
        params = decode_params(fetched.body, bundle.manifest.params)
        self.cache.params[key] = params
        while len(self.cache.params) > self.cache.max_versions:
            self.cache.params.pop(next(iter(self.cache.params)))
        return params


async def run_device(
    device: Device,
    *,
    stop: Callable[[], bool],
    on_outcome: Callable[[RoundOutcome], None] | None = None,
    idle_s: float = 0.0,
) -> None:
    """Loop ``run_once`` until ``stop()``, waiting ``retry_after`` when turned away."""
    while not stop():
        try:
            outcome = await device.run_once()
        except ServerError as exc:
            outcome = RoundOutcome("rejected", retry_after=exc.retry_after or 1.0, reason=exc.code)
        if on_outcome is not None:
            on_outcome(outcome)
        await asyncio.sleep(outcome.retry_after if outcome.status != "uploaded" else idle_s)
