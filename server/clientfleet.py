"""Real SDK clients in one process: the fleet the demo, the failover drill and the
end-to-end tests drive.

Every device is a :class:`client_sdk.Client`, the object an app embeds, with its own
storage folder (credentials, open session, artifact and parameter cache) and its own
data; the devices share one HTTP connection pool. A device can be given a slower uplink
(its uploads wait ``delay`` seconds before they are sent): the demo's heavy-tailed
fleet. Devices are enrolled up front, so a test knows every device token.

The SDK fsyncs its storage folder on every state change (that is what lets a killed app
resume its session). Real devices each have their own flash; a hundred emulated ones on
one shared disk would queue behind each other's fsyncs on the event loop (3.7 ms each
on the development machines, about 8 per round), so :func:`scratch_dir` puts the
folders on tmpfs when there is one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.api import ServerApi
from client_sdk.client import Client
from client_sdk.data import ArrayDataSource
from client_sdk.eligibility import EligibilityPolicy
from client_sdk.events import Event
from client_sdk.options import ClientOptions, Credentials
from client_sdk.retry import RetryPolicy
from client_sdk.transport import AiohttpTransport, Response, Transport

# Emulated devices on loopback: retry fast, train back to back, stop a round 1 s before
# the deadline (there is no real network to leave room for).
FLEET_OPTIONS = ClientOptions(
    retry=RetryPolicy(max_attempts=6, base_delay_s=0.05, max_delay_s=0.5, max_elapsed_s=10.0),
    upload_margin_s=1.0,
    round_interval_s=0.0,
    ineligible_poll_s=1.0,
    max_error_backoff_s=1.0,
)

OnEvent = Callable[[int, Event], None]
TMPFS = Path("/dev/shm")


def scratch_dir(prefix: str) -> Path:
    """A fresh folder for device storage, on tmpfs when this machine has a writable one."""
    where = TMPFS if TMPFS.is_dir() and os.access(TMPFS, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=where))


class SlowUplink:
    """A transport whose uploads wait ``delay_s`` before they go out (a slow device)."""

    def __init__(self, inner: Transport, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Response:
        if method == "POST" and path.endswith("/updates"):
            await asyncio.sleep(self._delay_s)
        return await self._inner.request(
            method, path, body=body, headers=headers, timeout_s=timeout_s
        )

    async def close(self) -> None:
        """The shared transport is the fleet's to close."""


@dataclass(frozen=True)
class FleetDevice:
    index: int
    device_id: str
    token: str
    client: Client


class ClientFleet:
    """Enrolled SDK clients for one task on one server (see the module docstring)."""

    def __init__(
        self,
        url: str,
        task: str,
        root: Path | None = None,
        *,
        limit: int = 64,
        options: ClientOptions = FLEET_OPTIONS,
        on_event: OnEvent | None = None,
    ) -> None:
        self.url = url
        self.task = task
        self.root = scratch_dir(f"asyncfl-{task}-") if root is None else Path(root)
        self.transport = AiohttpTransport(url, limit=limit)
        self.api = ServerApi(self.transport)
        self.devices: list[FleetDevice] = []
        self._options = options
        self._on_event = on_event

    async def enroll(
        self,
        enrollment_key: str,
        data: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
        *,
        seed: int = 0,
        info: Callable[[int], Mapping[str, Any]] | None = None,
        uplink_delay: Callable[[int], float] | None = None,
    ) -> ClientFleet:
        """Enroll one device per ``(x, y)`` shard and build its client."""
        for x, y in data:
            i = len(self.devices)
            device_id, token = await self.api.enroll(enrollment_key, info(i) if info else {})
            transport: Transport = self.transport
            if uplink_delay is not None:
                transport = SlowUplink(self.transport, uplink_delay(i))
            client = Client(
                self.url,
                self.task,
                Credentials(device_token=token),
                ArrayDataSource(x, y),
                self.root / f"device-{i}",
                policy=EligibilityPolicy.always(),
                options=replace(self._options, seed=seed * 7919 + i),
                on_event=self._callback(i),
                transport=transport,
            )
            self.devices.append(FleetDevice(i, device_id, token, client))
        return self

    def _callback(self, index: int) -> Callable[[Event], None] | None:
        on_event = self._on_event
        if on_event is None:
            return None
        return lambda event: on_event(index, event)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Every device trains round after round until ``stop`` is set."""
        await asyncio.gather(*(d.client.run_forever(stop) for d in self.devices))

    async def close(self, *, remove: bool = True) -> None:
        for device in self.devices:
            await device.client.close()
        await self.transport.close()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
