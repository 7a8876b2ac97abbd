"""Errors raised by the asyncfl server.

Every error the server raises on purpose derives from :class:`AsyncflError` and carries
a stable ``code`` (part of the public API: clients branch on it) and the HTTP ``status``
the error middleware answers with. Third-party exceptions (SQLAlchemy, Redis,
onnxruntime, msgpack) are translated where they enter, with ``raise ... from exc``.

Hierarchy::

    AsyncflError
    ├── ConfigError            bad settings or task configuration          (400)
    ├── BadRequest             malformed body, missing or wrong fields     (400)
    │   └── UpdateRejected     an update refused by validation/staleness   (422 / 409)
    ├── Unauthorized           missing or wrong credential                 (401)
    ├── Forbidden              credential valid but not for this resource  (403)
    ├── NotFound               unknown task, version, artifact             (404)
    ├── Conflict               state does not allow the operation          (409)
    ├── SessionError           forged, expired, replayed or foreign session (401 / 409 / 410)
    ├── PayloadTooLarge        body above the configured limit             (413)
    ├── RateLimited            per-device rate limit hit                   (429)
    ├── Unavailable            a backend is down or the server is draining  (503)
    └── StorageError           the database or blob store failed           (500)
"""

from __future__ import annotations

from typing import Any, ClassVar


class AsyncflError(Exception):
    """Root of every error the server raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class ConfigError(AsyncflError):
    code = "invalid_config"
    status = 400


class BadRequest(AsyncflError):
    code = "bad_request"
    status = 400


class UpdateRejected(BadRequest):
    """An update the aggregation core refuses; ``code`` names the reason."""

    code = "update_rejected"
    status = 422


class Unauthorized(AsyncflError):
    code = "unauthorized"
    status = 401


class Forbidden(AsyncflError):
    code = "forbidden"
    status = 403


class NotFound(AsyncflError):
    code = "not_found"
    status = 404


class Conflict(AsyncflError):
    code = "conflict"
    status = 409


class SessionError(AsyncflError):
    code = "invalid_session"
    status = 401


class PayloadTooLarge(AsyncflError):
    code = "payload_too_large"
    status = 413


class RateLimited(AsyncflError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unavailable(AsyncflError):
    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class StorageError(AsyncflError):
    code = "storage_error"
    status = 500
