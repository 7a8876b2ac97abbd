"""The v1 device API as typed calls over a :class:`~client_sdk.transport.Transport`.

Every call goes through a :class:`~client_sdk.retry.Retrier` (no retries unless one is
given). Error answers become :class:`ServerError` with the server's stable ``code`` and
its ``Retry-After``; malformed answers become :class:`WireFormatError`.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.errors import ServerError, WireFormatError
from client_sdk.retry import Retrier
from client_sdk.secagg import ENCODING, FixedPoint, SealedSeed
from client_sdk.transport import Response, Transport
from client_sdk.wire import CONTENT_TYPE, encode_tensors, pack, unpack

HEADERS = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}

# The fields an update body carries (server/updates.py refuses anything else).
UPDATE_FIELDS = frozenset(
    {"session", "base_version", "num_examples", "encoding", "tensors", "metrics"}
)


@dataclass(frozen=True)
class Checkin:
    """The check-in answer. ``evaluate``: the server asks for federated evaluation of
    ``version``; ``train`` False makes it an evaluation-only session."""

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
    evaluate: bool = False
    train: bool = True
    # secure aggregation: {mask_key, mask_key_signature (hex), fixed_point, threshold}
    secure_aggregation: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Fetched:
    """A GET answer: ``body`` is None when the server said 304 (our copy is current)."""

    body: bytes | None
    etag: str | None
    cache_control: str = ""


class ServerApi:
    def __init__(self, transport: Transport, *, retrier: Retrier | None = None) -> None:
        self.transport = transport
        self.retrier = retrier or Retrier()

    async def enroll(self, enrollment_key: str, device_info: Mapping[str, Any]) -> tuple[str, str]:
        resp = await self._call(
            "POST",
            "/v1/devices/enroll",
            {"enrollment_key": enrollment_key, "device_info": dict(device_info)},
        )
        try:
            return str(resp["device_id"]), str(resp["device_token"])
        except KeyError as exc:
            raise WireFormatError(f"enrollment answer has no {exc}") from exc

    async def checkin(self, task: str, token: str, info: Mapping[str, Any]) -> Checkin:
        obj = await self._call("POST", f"/v1/tasks/{task}/checkin", dict(info), token=token)
        try:
            if not obj.get("admitted"):
                reason = obj.get("reason")
                return Checkin(False, float(obj.get("retry_after", 1.0)), str(reason or "no_slot"))
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
                evaluate=bool(obj.get("evaluate", False)),
                train=bool(obj.get("train", True)),
                secure_aggregation=_secure_aggregation(obj),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireFormatError(f"check-in answer is missing or mistypes {exc}") from exc

    async def fetch(self, path: str, token: str, etag: str | None = None) -> Fetched:
        headers = {"Authorization": f"Bearer {token}"}
        if etag:
            headers["If-None-Match"] = etag

        async def attempt() -> Fetched:
            resp = await self.transport.request("GET", path, headers=headers)
            control = resp.headers.get("Cache-Control", "")
            if resp.status == 304:
                return Fetched(None, resp.headers.get("ETag", etag), control)
            _raise_for_error(resp)
            return Fetched(resp.body, resp.headers.get("ETag"), control)

        return await self.retrier.call(f"GET {path}", attempt)

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

    def encode_masked_update(
        self,
        session: str,
        base_version: int,
        num_examples: int,
        masked: np.ndarray[Any, Any],
        sealed: SealedSeed,
        metrics: Mapping[str, float],
    ) -> bytes:
        """A secure-aggregation upload body: the masked vector and the sealed seed."""
        return pack(
            {
                "session": session,
                "base_version": base_version,
                "num_examples": num_examples,
                "encoding": ENCODING,
                "tensors": encode_tensors([masked]),
                "secagg": sealed.to_wire(),
                "metrics": {k: float(v) for k, v in metrics.items()},
            }
        )

    async def upload(self, task: str, body: bytes) -> dict[str, Any]:
        """Send an update body; retries are safe: the session makes the upload idempotent."""
        path = f"/v1/tasks/{task}/updates"

        async def attempt() -> dict[str, Any]:
            resp = await self.transport.request("POST", path, body=body, headers=HEADERS)
            return _decode(resp)

        return await self.retrier.call(f"POST {path}", attempt)

    async def report_evaluation(
        self, task: str, session: str, version: int, metrics: Mapping[str, float]
    ) -> dict[str, Any]:
        """Report federated-evaluation metrics of ``version`` for a session."""
        payload = {"session": session, "version": version, "metrics": dict(metrics)}
        return await self._call("POST", f"/v1/tasks/{task}/evaluations", payload)

    async def release_session(self, task: str, session: str) -> None:
        """Give the session's concurrency slot back (it will not upload)."""
        resp = await self.transport.request(
            "POST",
            f"/v1/tasks/{task}/sessions/release",
            body=pack({"session": session}),
            headers=HEADERS,
        )
        _raise_for_error(resp)

    async def _call(
        self, method: str, path: str, payload: Mapping[str, Any], *, token: str | None = None
    ) -> dict[str, Any]:
        headers = dict(HEADERS)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = pack(dict(payload))

        async def attempt() -> dict[str, Any]:
            resp = await self.transport.request(method, path, body=body, headers=headers)
            return _decode(resp)

        return await self.retrier.call(f"{method} {path}", attempt)


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
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    raise ServerError(resp.status, code, message, retry_after=retry_after)


def parse_retry_after(raw: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _secure_aggregation(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The check-in's secure-aggregation terms, JSON-able (keys as hex) for the state."""
    if obj.get("encoding", "float32") != ENCODING:
        return None
    terms = obj["secure_aggregation"]
    signature = terms.get("mask_key_signature")
    return {
        "mask_key": bytes(terms["mask_key"]).hex(),
        "mask_key_signature": None if signature is None else bytes(signature).hex(),
        "fixed_point": FixedPoint.from_dict(terms["fixed_point"]).to_dict(),
        "threshold": int(terms["threshold"]),
    }
