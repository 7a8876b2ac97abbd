"""The production device client: check in, train on local data, upload, survive anything.

One :meth:`Client.run_once` is one session::

    eligible? -> resume an open session, or check in -> fetch graphs and parameters
    (disk cache) -> [evaluate] -> train within plan, budget and deadline -> persist the
    update -> upload (retried; idempotent by session) -> forget the session

Every step that can be interrupted leaves the storage folder in a state the next run
continues from (see :mod:`client_sdk.state`). Errors raised are :class:`SdkError`s;
expected outcomes are results (:mod:`client_sdk.results`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.api import Checkin, ServerApi
from client_sdk.artifacts import ArtifactStore, Traffic
from client_sdk.cache import DiskCache
from client_sdk.data import DataSource
from client_sdk.eligibility import DeviceStateProvider, EligibilityPolicy, ManualDeviceState
from client_sdk.errors import (
    BundleError,
    ConfigError,
    SdkError,
    ServerError,
    TrainingError,
    WireFormatError,
)
from client_sdk.events import Emitter, EventCallback
from client_sdk.options import ClientOptions, Credentials
from client_sdk.privacy import clip_by_global_norm
from client_sdk.results import Evaluated, NoSlot, NotEligible, Rejected, RoundResult, Trained
from client_sdk.retry import Retrier, is_retryable
from client_sdk.secagg import FixedPoint, SecaggError, mask_update, seed_context
from client_sdk.state import ClientState, DeviceCredentials, PendingSession
from client_sdk.trainer import Trainer
from client_sdk.training import evaluate, plan_from, train
from client_sdk.transport import AiohttpTransport, Transport
from client_sdk.version import __version__

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Joules the device has used so far, from a counter the platform keeps (Linux RAPL's
# energy_uj, Android's BatteryManager charge counter x voltage, ...); None: unknown now.
EnergyMeter = Callable[[], float | None]


class Client:
    """An async FL client for one task; see the module docstring and the README."""

    def __init__(
        self,
        server_url: str,
        task: str,
        credentials: Credentials,
        data: DataSource,
        storage: str | Path,
        *,
        policy: EligibilityPolicy | None = None,
        device_state: DeviceStateProvider | None = None,
        options: ClientOptions | None = None,
        eval_data: DataSource | None = None,
        on_event: EventCallback | None = None,
        energy_meter: EnergyMeter | None = None,
        transport: Transport | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.task = task
        self.options = options = options or ClientOptions()
        self._credentials = credentials
        self._data = data
        self._eval_data = eval_data or data
        self._policy = policy or EligibilityPolicy()
        self._device_state = device_state or ManualDeviceState()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock
        self._rng = rng or random.Random(options.seed)
        self._emit = Emitter(task, on_event)
        self._energy_meter = energy_meter
        self._state = ClientState(Path(storage))
        self._own_transport = transport is None
        self.transport: Transport = transport or AiohttpTransport(
            server_url,
            timeout_s=options.request_timeout_s,
            connect_timeout_s=options.connect_timeout_s,
        )
        retrier = Retrier(options.retry, sleep=self._sleep, rng=self._rng, on_retry=self._retried)
        self.api = ServerApi(self.transport, retrier=retrier)
        cache = DiskCache(
            Path(storage) / "cache", max_bytes=options.cache_max_bytes, clock=self._clock
        )
        self._artifacts = ArtifactStore(
            self.api, cache, self._device_token, threads=options.threads, clock=self._clock
        )
        self._token = ""
        self._running = asyncio.Lock()  # one round at a time: they share the storage folder

    @property
    def traffic(self) -> Traffic:
        """Graph and parameter bytes downloaded so far (a cache hit downloads none)."""
        return self._artifacts.traffic

    # -- the public loop --------------------------------------------------------------------
    async def run_once(self) -> RoundResult:
        """One session; raises :class:`SdkError` when retries could not get it through
        (an open session stays on disk and the next call picks it up)."""
        self._emit.bind(asyncio.get_running_loop())
        try:
            async with self._running:
                return await self._round()
        except SdkError as exc:
            logger.warning("round for task %s failed: %s", self.task, exc)
            self._emit("error", error=str(exc), type=type(exc).__name__)
            raise

    async def run_forever(
        self, stop: asyncio.Event | None = None, *, max_rounds: int | None = None
    ) -> None:
        """Call :meth:`run_once` until ``stop`` is set (or ``max_rounds`` ran), waiting
        between rounds as the result says; failed rounds back off exponentially."""
        rounds = failures = 0
        while not (stop is not None and stop.is_set()):
            if max_rounds is not None and rounds >= max_rounds:
                return
            rounds += 1
            try:
                delay = self._wait_after(await self.run_once())
                failures = 0
            except SdkError as exc:
                failures += 1
                ceiling = min(self.options.max_error_backoff_s, 2.0**failures)
                delay = self._rng.uniform(0.0, ceiling)
                if isinstance(exc, ServerError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
            if max_rounds is not None and rounds >= max_rounds:
                return
            await self._pause(delay, stop)

    async def close(self) -> None:
        if self._own_transport:
            await self.transport.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one round --------------------------------------------------------------------------
    async def _round(self) -> RoundResult:
        reasons = self._ineligible()
        if reasons:
            self._emit("not_eligible", reasons=reasons, during_training=False)
            return NotEligible(reasons)
        pending = self._state.session(self.task)
        if pending is not None:
            resumed = await self._resume(pending)
            if resumed is not None:
                return resumed
        if self._data.count() < 1:
            self._emit("not_eligible", reasons=("no_data",), during_training=False)
            return NotEligible(("no_data",))
        checkin = await self._checkin()
        if not checkin.admitted:
            return NoSlot(checkin.retry_after, checkin.reason or "no_slot")
        pending = PendingSession.from_checkin(self.task, checkin, self._clock())
        self._state.save_session(pending)
        return await self._work(pending, resumed=False)

    async def _work(self, pending: PendingSession, *, resumed: bool) -> RoundResult:
        """Train and upload for ``pending``. A failure that would fail again the same way
        (a bad bundle or plan, a diverging model) drops the session; a network failure
        keeps it for the next run."""
        try:
            return await self._train_and_upload(pending, resumed=resumed)
        except (BundleError, TrainingError, ConfigError, WireFormatError):
            await self._abandon(pending)
            raise

    async def _abandon(self, pending: PendingSession) -> None:
        """Drop a session that will not upload, and give its slot back to the task (best
        effort: the server frees it at the deadline anyway)."""
        self._state.clear_session(self.task)
        try:
            await self.api.release_session(self.task, pending.session)
        except SdkError as exc:
            logger.info("could not release session %s: %s", pending.session_id, exc)

    async def _resume(self, pending: PendingSession) -> RoundResult | None:
        """Finish the session an earlier run left open, or drop it (returns None)."""
        left = pending.deadline - self._clock()
        if pending.phase == "trained":
            action = "upload"
        elif left >= self.options.upload_margin_s + self.options.min_train_s:
            action = "continue"
        else:
            action = "drop"
        logger.info("open session %s (%s): %s", pending.session_id, pending.phase, action)
        self._emit("resume", session_id=pending.session_id, phase=pending.phase, action=action)
        if action == "upload":
            body = self._state.update(self.task)
            if body is not None:
                return await self._upload(pending, body, resumed=True)
        elif action == "continue":
            return await self._work(pending, resumed=True)
        await self._abandon(pending)
        return None

    async def _train_and_upload(self, pending: PendingSession, *, resumed: bool) -> RoundResult:
        fetched_before = self.traffic.graph_bytes + self.traffic.param_bytes
        trainer = await self._artifacts.trainer(pending.artifacts)
        params = await self._artifacts.params(
            self.task, pending.version, pending.params_url, trainer.bundle.manifest
        )
        fetched = self.traffic.graph_bytes + self.traffic.param_bytes - fetched_before
        evaluation = None
        if pending.evaluate and self._eval_data.count() > 0:
            evaluation = await self._evaluate(trainer, params, pending)
            if not pending.train:
                await self._abandon(pending)
                return Evaluated(pending.version, evaluation)
        budget = pending.deadline - self._clock() - self.options.upload_margin_s
        if budget < self.options.min_train_s:
            await self._abandon(pending)
            return Rejected("deadline_too_close", message=f"{budget:.1f}s left to train")
        seed = self._rng.randrange(2**31)
        energy_before = self._energy()
        run = await train(
            trainer,
            params,
            self._data,
            plan_from(pending.plan, budget),
            guard=self._ineligible,
            emit=self._emit,
            seed=seed,
            progress_every=self.options.progress_every,
        )
        result = run.result
        if run.ineligible or result.steps == 0:
            await self._abandon(pending)  # nothing but the release leaves the device
            reasons = run.ineligible or ("no_data",)
            logger.info("training stopped after %d steps: %s", result.steps, reasons)
            self._emit("not_eligible", reasons=reasons, during_training=True)
            return NotEligible(reasons, during_training=True)
        delta = result.delta
        if self.options.clip_norm is not None:
            delta, _ = clip_by_global_norm(delta, self.options.clip_norm)
        num_examples = max(1, min(result.num_examples, self._data.count()))
        metrics = {
            "loss": result.mean_loss,
            "steps": result.steps,
            "train_s": result.wall_s,
            "download_bytes": fetched,
        }
        energy_after = self._energy()
        # a counter that went backwards (wrapped, reset) tells nothing
        if energy_before is not None and energy_after is not None and energy_after >= energy_before:
            metrics["energy_j"] = energy_after - energy_before
        terms = pending.secure_aggregation
        if terms is None:
            body = self.api.encode_update(
                pending.session, pending.version, num_examples, delta, metrics
            )
        else:
            try:
                body = self._masked_body(pending, terms, num_examples, delta, metrics)
            except SecaggError as exc:
                await self._abandon(pending)
                logger.warning("secure aggregation refused by this device: %s", exc)
                return Rejected("secagg_untrusted", message=str(exc))
        summary: dict[str, Any] = {
            "num_examples": num_examples,
            "steps": result.steps,
            "loss": result.mean_loss,
            "train_s": result.wall_s,
            "stopped": result.stopped,
            "evaluation": evaluation,
        }
        pending = self._state.save_update(pending, body, summary)
        return await self._upload(pending, body, resumed=resumed)

    def _masked_body(
        self,
        pending: PendingSession,
        terms: dict[str, Any],
        num_examples: int,
        delta: list[np.ndarray[Any, Any]],
        metrics: dict[str, float],
    ) -> bytes:
        """Clip, encode, mask and seal: only masked bytes and a sealed seed leave."""
        trust = self.options.secagg_trust
        if trust is None:
            raise SecaggError("no trust anchor for a mask service (ClientOptions.secagg_trust)")
        key = bytes.fromhex(terms["mask_key"])
        signature = terms.get("mask_key_signature")
        trust.verify(key, None if signature is None else bytes.fromhex(signature))
        context = seed_context(self.task, pending.session_id, pending.session_id)
        masked, sealed = mask_update(
            delta, FixedPoint.from_dict(terms["fixed_point"]), key, context
        )
        return self.api.encode_masked_update(
            pending.session, pending.version, num_examples, masked, sealed, metrics
        )

    async def _upload(self, pending: PendingSession, body: bytes, *, resumed: bool) -> RoundResult:
        try:
            ack = await self.api.upload(self.task, body)
        except ServerError as exc:
            if is_retryable(exc):
                raise  # the update stays on disk; the next run sends it again
            self._state.clear_session(self.task)
            logger.info("update of session %s refused: %s", pending.session_id, exc.code)
            return Rejected(exc.code, exc.status, exc.message)
        self._state.clear_session(self.task)
        summary = pending.summary
        duplicate = bool(ack.get("duplicate", False))
        update_id = str(ack.get("update_id", pending.session_id))
        self._emit(
            "upload",
            version=pending.version,
            num_examples=summary.get("num_examples", 0),
            bytes=len(body),
            update_id=update_id,
            duplicate=duplicate,
            position=ack.get("position"),
        )
        logger.info("update %s accepted (version %d)", update_id, pending.version)
        staleness = ack.get("staleness")
        return Trained(
            version=pending.version,
            num_examples=int(summary.get("num_examples", 0)),
            steps=int(summary.get("steps", 0)),
            loss=float(summary.get("loss", math.nan)),
            train_s=float(summary.get("train_s", 0.0)),
            stopped=str(summary.get("stopped", "")),
            update_id=update_id,
            staleness=int(staleness) if isinstance(staleness, int) else None,
            duplicate=duplicate,
            resumed=resumed,
            evaluation=summary.get("evaluation"),
        )

    async def _evaluate(
        self, trainer: Trainer, params: list[Any], pending: PendingSession
    ) -> dict[str, float]:
        metrics = await evaluate(
            trainer, params, self._eval_data, batch_size=self.options.eval_batch_size
        )
        self._emit("evaluation", version=pending.version, **metrics)
        try:
            await self.api.report_evaluation(self.task, pending.session, pending.version, metrics)
        except ServerError as exc:
            if is_retryable(exc):
                raise
            # a server without federated evaluation must not cost the training round
            logger.warning("evaluation report refused (%s); training anyway", exc.code)
        return metrics

    # -- credentials and check-in -----------------------------------------------------------
    async def _checkin(self) -> Checkin:
        info = {"sdk_version": __version__}
        try:
            checkin = await self.api.checkin(self.task, await self._device_token(), info)
        except ServerError as exc:
            if exc.code != "invalid_device_token" or not self._credentials.enrollment_key:
                raise
            logger.info("device token refused; enrolling again")
            self._state.forget_credentials()
            self._token = ""
            checkin = await self.api.checkin(self.task, await self._device_token(), info)
        self._emit(
            "checkin",
            admitted=checkin.admitted,
            version=checkin.version,
            session_id=checkin.session_id,
            deadline_s=checkin.deadline_s,
            retry_after=checkin.retry_after,
            reason=checkin.reason,
        )
        return checkin

    async def _device_token(self) -> str:
        if self._token:
            return self._token
        if self._credentials.device_token:
            self._token = self._credentials.device_token
            return self._token
        stored = self._state.credentials()
        if stored is None:
            info = dict(self._credentials.device_info)
            if self.options.device_tier:
                info.setdefault("tier", self.options.device_tier)
            device_id, token = await self.api.enroll(self._credentials.enrollment_key, info)
            stored = DeviceCredentials(device_id, token)
            self._state.save_credentials(stored)
            logger.info("enrolled as device %s", device_id)
        self._token = stored.device_token
        return self._token

    # -- helpers ----------------------------------------------------------------------------
    def _energy(self) -> float | None:
        if self._energy_meter is None:
            return None
        try:
            value = self._energy_meter()
        except Exception:  # the platform's meter failed: energy unknown, training goes on
            logger.exception("the energy meter failed")
            return None
        if value is None or not math.isfinite(value):
            return None
        return float(value)

    def _ineligible(self) -> tuple[str, ...]:
        try:
            return self._policy.reasons(self._device_state.current())
        except Exception:  # the app's provider failed: not knowing means not training
            logger.exception("the device state provider failed")
            return ("state_unavailable",)

    def _retried(self, what: str, attempt: int, delay: float, exc: SdkError) -> None:
        logger.info("%s failed (%s); retry %d in %.2fs", what, exc, attempt, delay)
        self._emit("retry", what=what, attempt=attempt, delay_s=delay, error=str(exc))

    def _wait_after(self, result: RoundResult) -> float:
        if isinstance(result, NoSlot):
            return result.retry_after
        if isinstance(result, NotEligible):
            return self.options.ineligible_poll_s
        return self.options.round_interval_s

    async def _pause(self, seconds: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self._sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(stop.wait())
        _, pending = await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
