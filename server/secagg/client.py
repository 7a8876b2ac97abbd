"""The aggregation server's client of the mask service.

Errors are translated here: the service unreachable, or answering 5xx, is
:class:`~server.errors.Unavailable` (``secagg_unavailable``: uploads answer 503 with
Retry-After and nothing is stored); a refusal keeps the service's code (a refused seed
refuses the upload; a refused release is the leader's to handle).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import numpy as np

from client_sdk.errors import WireFormatError
from client_sdk.secagg import SealedSeed
from client_sdk.wire import CONTENT_TYPE, decode_tensor, pack, unpack
from server.aggregation import Release
from server.errors import AsyncflError, Conflict, Unavailable, UpdateRejected

logger = logging.getLogger(__name__)

TIMEOUT_S = 30.0


class MaskServiceKey:
    """What check-in hands devices: the service's public key and its operator signature."""

    def __init__(self, public_key: bytes, signature: bytes | None) -> None:
        self.public_key = public_key
        self.signature = signature


class MaskClient:
    def __init__(self, url: str, token: str) -> None:
        self._url = url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": CONTENT_TYPE,
            "Accept": CONTENT_TYPE,
        }
        self._http: aiohttp.ClientSession | None = None
        self._key: MaskServiceKey | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            async with self._session().request(
                method,
                f"{self._url}{path}",
                data=None if body is None else pack(body),
                headers=self._headers,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(
                f"mask service unreachable: {exc!r}", code="secagg_unavailable", retry_after=2.0
            ) from exc
        if status >= 500:
            raise Unavailable(
                f"mask service answered {status}", code="secagg_unavailable", retry_after=2.0
            )
        try:
            return status, unpack(raw) if raw else None
        except WireFormatError as exc:
            raise Unavailable(
                "mask service answered garbage", code="secagg_unavailable", retry_after=2.0
            ) from exc

    async def key(self) -> MaskServiceKey:
        if self._key is None:
            status, body = await self._call("GET", "/v1/key")
            if status != 200 or not isinstance(body, dict):
                raise Unavailable("mask service key unavailable", code="secagg_unavailable")
            self._key = MaskServiceKey(bytes(body["public_key"]), body.get("signature"))
        return self._key

    async def register(
        self,
        task_id: str,
        *,
        update_id: str,
        session_id: str,
        device_id: str,
        threshold: int,
        sealed: SealedSeed,
    ) -> None:
        status, body = await self._call(
            "POST",
            f"/v1/tasks/{task_id}/seeds",
            {
                "update_id": update_id,
                "session_id": session_id,
                "device_id": device_id,
                "threshold": threshold,
                "sealed": sealed.to_wire(),
            },
        )
        if status != 201:
            _, message = _error(body)
            raise UpdateRejected(
                f"the mask service refused the seed: {message}", code="seed_refused"
            )

    async def release(
        self, task_id: str, release: Release, size: int, noise_std: float = 0.0
    ) -> np.ndarray[Any, Any]:
        """``sum(w_i * mask_i) mod 2**32`` for a sealed buffer (Conflict when refused),
        minus the service's noise of ``noise_std`` (fixed-point units) for a DP task."""
        status, body = await self._call(
            "POST",
            f"/v1/tasks/{task_id}/releases",
            {
                "release_id": release.release_id,
                "version": release.version,
                "size": size,
                "items": [[uid, w] for uid, w in zip(release.ids, release.weights, strict=True)],
                **({"noise_std": noise_std} if noise_std > 0 else {}),
            },
        )
        if status != 200 or not isinstance(body, dict):
            code, message = _error(body)
            raise Conflict(
                f"the mask service refused release {release.release_id}: {message}", code=code
            )
        try:
            mask_sum = decode_tensor(body["mask_sum"], where="mask_sum")
        except (KeyError, WireFormatError) as exc:
            raise Unavailable("mask service answered a bad sum", code="secagg_unavailable") from exc
        if mask_sum.dtype != np.uint32 or mask_sum.shape != (size,):
            raise Unavailable(
                "mask service answered a sum of the wrong shape", code="secagg_unavailable"
            )
        return mask_sum.copy()

    async def commit(self, task_id: str, release_ids: Sequence[str]) -> None:
        """The versions that used these releases are committed: let their seeds go."""
        for release_id in release_ids:
            try:
                await self._call("POST", f"/v1/tasks/{task_id}/releases/{release_id}/commit")
            except AsyncflError as exc:  # housekeeping: seeds kept longer, nothing lost
                logger.warning("mask service: release %s not committed: %s", release_id, exc)


def _error(body: Any) -> tuple[str, str]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("code", "release_refused")), str(error.get("message", ""))
    return "release_refused", "no reason given"


class ProvidedReleases:
    """The leader's :class:`~server.tasks.local.Releases`: the configured mask service."""

    def __init__(self, provider: Any, noise_std: Callable[[str, int], float] | None = None) -> None:
        self._provider = provider
        self._noise_std = noise_std  # (task, size) -> the std the service must add

    async def release(self, task_id: str, release: Release, size: int) -> np.ndarray[Any, Any]:
        client: MaskClient = await self._provider.client()
        std = 0.0 if self._noise_std is None else self._noise_std(task_id, size)
        return await client.release(task_id, release, size, std)

    async def forget(self, task_id: str, release_ids: list[str]) -> None:
        client: MaskClient = await self._provider.client()
        await client.commit(task_id, release_ids)
