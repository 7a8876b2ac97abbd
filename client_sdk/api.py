"""The v1 device API as typed calls over a :class:`~client_sdk.transport.Transport`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.errors import ServerError, WireFormatError
from client_sdk.transport import Response, Transport
from client_sdk.wire import CONTENT_TYPE, encode_tensors, pack, unpack

HEADERS = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}


@dataclass(frozen=True)
class Checkin:
    admitted: bool
    retry_after: float = 0.0
    reason: str | None = None
    session: str = ""
    session_id: str = ""
    version: int = -1
    deadline: float = 0.0
    deadline_s: float = 0.0
    plan: Mapping[str, Any] | None = None
    artifacts: Mapping[str, str] | None = None
    params_url: str = ""


@dataclass(frozen=True)
class Fetched:
    """A GET answer: ``body`` is None when the server said 304 (our copy is current)."""

    body: bytes | None
    etag: str | None


class ServerApi:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def enroll(self, enrollment_key: str, device_info: Mapping[str, Any]) -> tuple[str, str]:
        resp = await self._call(
            "POST",
            "/v1/devices/enroll",
            {"enrollment_key": enrollment_key, "device_info": dict(device_info)},
        )
        return str(resp["device_id"]), str(resp["device_token"])

    async def checkin(self, task: str, token: str, info: Mapping[str, Any]) -> Checkin:
        obj = await self._call("POST", f"/v1/tasks/{task}/checkin", dict(info), token=token)
        if not obj.get("admitted"):
            return Checkin(False, float(obj.get("retry_after", 1.0)), obj.get("reason"))
        return Checkin(
            admitted=True,
            session=str(obj["session"]),
            session_id=str(obj["session_id"]),
            version=int(obj["version"]),
            deadline=float(obj["deadline"]),
            deadline_s=float(obj["deadline_s"]),
            plan=dict(obj["plan"]),
            artifacts=dict(obj["artifacts"]),
            params_url=str(obj["params"]["url"]),
        )

    async def fetch(self, path: str, token: str, etag: str | None = None) -> Fetched:
        headers = {"Authorization": f"Bearer {token}"}
        if etag:
            headers["If-None-Match"] = etag
        resp = await self.transport.request("GET", path, headers=headers)
        if resp.status == 304:
            return Fetched(None, resp.headers.get("ETag", etag))
        _raise_for_error(resp)
        return Fetched(resp.body, resp.headers.get("ETag"))

    def encode_update(
        self,
        session: str,
        base_version: int,
        num_examples: int,
        delta: Sequence[np.ndarray[Any, Any]],
        metrics: Mapping[str, float],
    ) -> bytes:
        """The upload body: exactly the fields the protocol declares, nothing else."""
        return pack(
            {
                "session": session,
                "base_version": base_version,
                "num_examples": num_examples,
                "encoding": "float32",
                "tensors": encode_tensors([np.asarray(d, np.float32) for d in delta]),
                "metrics": {k: float(v) for k, v in metrics.items()},
            }
        )

    async def upload(self, task: str, body: bytes) -> dict[str, Any]:
        resp = await self.transport.request(
            "POST", f"/v1/tasks/{task}/updates", body=body, headers=HEADERS
        )
        return _decode(resp)

    async def _call(
        self, method: str, path: str, payload: Mapping[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        headers = dict(HEADERS)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        resp = await self.transport.request(method, path, body=pack(dict(payload)), headers=headers)
        return _decode(resp)


def _decode(resp: Response) -> dict[str, Any]:
    _raise_for_error(resp)
    obj = unpack(resp.body)
    if not isinstance(obj, dict):
        raise WireFormatError("server answer is not a map")
    return obj


def _raise_for_error(resp: Response) -> None:
    if resp.status < 400:
        return
    code, message = "http_error", resp.body[:200].decode(errors="replace")
    try:
        content_type = resp.headers.get("Content-Type", "")
        doc = json.loads(resp.body) if "json" in content_type else unpack(resp.body)
        code, message = str(doc["error"]["code"]), str(doc["error"]["message"])
    except (ValueError, KeyError, TypeError, WireFormatError):
        pass
    retry_after = None
    raw = resp.headers.get("Retry-After")
    if raw is not None:
        try:
            retry_after = float(raw)
        except ValueError:
            retry_after = None
    raise ServerError(resp.status, code, message, retry_after=retry_after)
