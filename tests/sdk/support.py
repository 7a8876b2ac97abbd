"""Helpers for the SDK tests: local data, quick retry settings, device states."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk import (
    ArrayDataSource,
    Client,
    ClientOptions,
    Credentials,
    DeviceState,
    EligibilityPolicy,
    RetryPolicy,
)

FEATURES, CLASSES = 64, 10  # the logreg / mlp zoo models (digits: 8x8 images)
QUICK_RETRY = RetryPolicy(max_attempts=30, base_delay_s=0.02, max_delay_s=0.3, max_elapsed_s=60)
ELIGIBLE = DeviceState(charging=True, unmetered=True, idle=True, battery=0.9)


def local_data(n: int = 120, seed: int = 0) -> ArrayDataSource:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=n).astype(np.int64)
    return ArrayDataSource(x, y)


async def scaled_sleep(seconds: float) -> None:
    """Waits 1/50 of what the client asks: the schedule is checked, not the clock."""
    await asyncio.sleep(seconds / 50)


class ClientFactory:
    """``make(url, task, enrollment_key, storage=..., **Client kwargs)`` -> Client."""

    def __init__(self, make: Callable[..., Client]) -> None:
        self._make = make

    def __call__(self, url: str, task: str, key: str, **kwargs: Any) -> Client:
        return self._make(url, task, key, **kwargs)

    @staticmethod
    def build(root: Path, url: str, task: str, key: str, **kwargs: Any) -> Client:
        storage = kwargs.pop("storage", root / "device")
        kwargs.setdefault("data", local_data())
        kwargs.setdefault("policy", EligibilityPolicy.always())
        kwargs.setdefault("options", ClientOptions(retry=QUICK_RETRY, upload_margin_s=1.0))
        data = kwargs.pop("data")
        return Client(url, task, Credentials(enrollment_key=key), data, storage, **kwargs)
