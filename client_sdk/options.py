"""How a :class:`~client_sdk.client.Client` is set up: credentials and tunable options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client_sdk.errors import ConfigError
from client_sdk.retry import RetryPolicy
from client_sdk.secagg import TrustAnchor


@dataclass(frozen=True)
class Credentials:
    """How the device proves who it is. With an ``enrollment_key`` the client enrolls
    once and keeps the device token in its storage folder; a ``device_token`` issued
    out of band is used as is. ``device_info`` is sent at enrollment only."""

    enrollment_key: str = ""
    device_token: str = ""
    device_info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.enrollment_key and not self.device_token:
            raise ConfigError("credentials need an enrollment_key or a device_token")


@dataclass(frozen=True)
class ClientOptions:
    """Tunables; the defaults suit a phone on a real network."""

    request_timeout_s: float = 60.0  # one whole request, body included
    connect_timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache_max_bytes: int = 64 * 1024 * 1024  # graphs + parameters on disk
    threads: int = 1  # ONNX Runtime intra-op threads
    clip_norm: float | None = None  # local L2 clipping of the update before upload
    upload_margin_s: float = 10.0  # stop training this long before the session deadline
    min_train_s: float = 1.0  # a session with less time left than this is not trained
    progress_every: int = 10  # steps between progress events
    eval_batch_size: int = 256
    seed: int | None = None  # None: fresh randomness per round
    # The device's hardware class ("low", "mid", "high", ...): sent as device_info["tier"]
    # at enrollment, so the server can report participation and fairness per tier.
    device_tier: str = ""
    # Secure aggregation: how this app knows the mask service's key is genuine (a pinned
    # key, or an operator key that signed it). Without one the device does not take part
    # in secure-aggregation tasks (it gives the session back).
    secagg_trust: TrustAnchor | None = None
    # run_forever: waits between rounds
    round_interval_s: float = 60.0  # after a round that trained, evaluated or was refused
    ineligible_poll_s: float = 60.0  # after NotEligible
    max_error_backoff_s: float = 600.0  # cap of the backoff after failed rounds

    def __post_init__(self) -> None:
        positive = ("request_timeout_s", "connect_timeout_s", "upload_margin_s", "min_train_s")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.threads < 1 or self.progress_every < 1 or self.eval_batch_size < 1:
            raise ConfigError("threads, progress_every and eval_batch_size must be >= 1")
        if self.cache_max_bytes < 0:
            raise ConfigError("cache_max_bytes must be >= 0")
        if len(self.device_tier) > 32:
            raise ConfigError("device_tier must be at most 32 characters")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigError(f"clip_norm must be > 0, got {self.clip_norm}")
