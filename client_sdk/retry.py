"""Retries with exponential backoff and full jitter, honouring ``Retry-After``.

Retried: no answer at all (:class:`TransportError`: refused, reset, timeout), 5xx
(503 included), 429, and 409 ``upload_in_progress`` (the server is still storing an
earlier attempt of the same upload). Everything else is an answer and is raised at once.
The wait before attempt ``n + 1`` is ``uniform(0, min(max_delay, base * 2**n))`` ("full
jitter"), and never shorter than the server's ``Retry-After``. Clock and sleep are
injectable so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from client_sdk.errors import ConfigError, SdkError, ServerError, TransportError

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[str, int, float, SdkError], None]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset({"upload_in_progress"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request: attempts, backoff base and cap, total time allowed."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_elapsed_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry max_attempts must be >= 1")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ConfigError("retry delays must satisfy 0 <= base_delay_s <= max_delay_s")
        if self.max_elapsed_s < 0:
            raise ConfigError("retry max_elapsed_s must be >= 0")

    def delay(self, failures: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, failures - 1))
        wait = rng.uniform(0.0, ceiling)
        return wait if retry_after is None else max(wait, retry_after)


NO_RETRY = RetryPolicy(max_attempts=1)


def is_retryable(exc: SdkError) -> bool:
    """True for failures another attempt may cure (see the module docstring)."""
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, ServerError):
        return exc.status in RETRY_STATUSES or exc.code in RETRY_CODES
    return False


class Retrier:
    """Runs an async call until it succeeds, fails for good, or the policy runs out."""

    def __init__(
        self,
        policy: RetryPolicy = NO_RETRY,
        *,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_retry: OnRetry | None = None,
    ) -> None:
        self.policy = policy
        self._sleep = sleep or asyncio.sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.on_retry = on_retry

    async def call(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Await ``attempt()`` with retries; the last error is raised when giving up."""
        started = self._clock()
        failures = 0
        while True:
            try:
                return await attempt()
            except SdkError as exc:
                failures += 1
                if not is_retryable(exc) or failures >= self.policy.max_attempts:
                    raise
                retry_after = exc.retry_after if isinstance(exc, ServerError) else None
                wait = self.policy.delay(failures, self._rng, retry_after)
                if self._clock() - started + wait > self.policy.max_elapsed_s:
                    raise
                if self.on_retry is not None:
                    self.on_retry(what, failures, wait, exc)
                await self._sleep(wait)
