"""Signed, self-verifying tokens for devices and sessions (HMAC-SHA256).

A token is ``<kind>.<base64url payload>.<base64url signature>``, base64url without
padding. Verification is constant-time and needs no database read, so any replica can
check any token; what a token may still do (is the session used? is the device revoked?)
is decided elsewhere. A token verifies in exactly the one spelling it was issued in:
padding, characters outside the alphabet, or other trailing bits of the last character
are refused, not decoded leniently.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from server.errors import SessionError, Unauthorized


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _unb64(text: str) -> bytes | None:
    """Strict base64url without padding: the one spelling :func:`_b64` writes, else None."""
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        return None
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return data if _b64(data) == text else None


@dataclass(frozen=True)
class SessionClaims:
    """What a session token says: who may upload what, for which version, until when."""

    sid: str
    task: str
    device: str
    version: int
    issued_at: float
    expires_at: float
    round: int = 0  # the sync round the device was selected into (0: async)

    def expired(self, now: float) -> bool:
        return now > self.expires_at


class TokenSigner:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a signing secret is required")
        self._key = hashlib.sha256(("asyncfl-tokens:" + secret).encode()).digest()

    def _sign(self, kind: str, payload: bytes) -> str:
        body = f"{kind}.{_b64(payload)}"
        sig = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(sig)}"

    def _verify(self, kind: str, token: str) -> bytes | None:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != kind:
            return None
        body = f"{parts[0]}.{parts[1]}"
        expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        given, payload = _unb64(parts[2]), _unb64(parts[1])
        if given is None or payload is None or not hmac.compare_digest(expected, given):
            return None
        return payload

    # -- devices ---------------------------------------------------------------------
    def device_token(self, device_id: str) -> str:
        return self._sign("d1", device_id.encode())

    def verify_device(self, token: str) -> str:
        payload = self._verify("d1", token)
        if payload is None:
            raise Unauthorized("invalid device token", code="invalid_device_token")
        return payload.decode()

    # -- sessions --------------------------------------------------------------------
    def session_token(self, claims: SessionClaims) -> str:
        return self._sign("s1", json.dumps(asdict(claims), separators=(",", ":")).encode())

    def verify_session(self, token: Any) -> SessionClaims:
        """Check the signature (not the expiry: see :meth:`SessionClaims.expired`)."""
        if not isinstance(token, str):
            raise SessionError("session token missing", code="invalid_session")
        payload = self._verify("s1", token)
        if payload is None:
            raise SessionError("session token is forged or corrupt", code="invalid_session")
        try:
            claims = SessionClaims(**json.loads(payload))
        except (ValueError, TypeError) as exc:
            raise SessionError("session token is malformed", code="invalid_session") from exc
        return claims
