"""Errors raised by the asyncfl server, and the one table of their codes.

Every error the server raises on purpose derives from :class:`AsyncflError` and carries
a stable ``code`` (part of the public API: clients branch on it). The HTTP status and
the public message of a code live in :data:`CODES` and nowhere else: raise sites name a
code, never a status, and the error middleware is the only place that turns a code into
an answer. Bodies of 5xx answers carry the code's public message and a request id, never
the exception's own text (it may hold SQL, parameters or a Redis error); the text goes
to the log. Third-party exceptions (SQLAlchemy, Redis, onnxruntime, msgpack) are
translated where they enter, with ``raise ... from exc``.

Hierarchy::

    AsyncflError
    ├── ConfigError            bad settings or task configuration
    ├── BadRequest             malformed body, missing or wrong fields
    │   └── UpdateRejected     an update refused by validation, staleness or its round
    ├── Unauthorized           missing or wrong credential
    ├── Forbidden              credential valid but not for this resource
    ├── NotFound               unknown task, version, artifact
    ├── Conflict               state does not allow the operation
    ├── SessionError           forged, expired, replayed or foreign session
    ├── PayloadTooLarge        body above the configured limit
    ├── RateLimited            per-device rate limit hit
    ├── Unavailable            a backend is down or the server is draining (Retry-After)
    └── StorageError           the database, blob store or a durable log failed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """What a code means on the wire: its HTTP status and the message a 5xx shows."""

    status: int
    public: str = ""


def _codes(status: int, *codes: str, public: str = "") -> dict[str, ErrorSpec]:
    return dict.fromkeys(codes, ErrorSpec(status, public))


# Every code the server can answer with. A test checks that each code raised anywhere in
# the source tree is listed here.
CODES: Final[dict[str, ErrorSpec]] = {
    **_codes(
        400,
        "bad_request",
        "invalid_config",
        "malformed_body",
        "missing_field",
        "unknown_field",
        "bad_field",
        "bad_tensor",
        "bad_num_examples",
        "bad_model",
        "bad_bundle",
        "bad_evaluation",
        "bad_task_id",
        "bad_version",
        "bad_query",
        "bad_parameter",
        "bad_content_encoding",
        "unsupported_encoding",
        "bad_preset",
    ),
    **_codes(
        401,
        "unauthorized",
        "missing_token",
        "invalid_device_token",
        "invalid_admin_token",
        "invalid_enrollment_key",
        "invalid_session",
    ),
    **_codes(403, "forbidden", "session_task_mismatch", "device_revoked"),
    **_codes(
        404,
        "not_found",
        "unknown_task",
        "unknown_version",
        "params_not_kept",
        "unknown_artifact",
        "unknown_blob",
        "unknown_dataset",
    ),
    **_codes(405, "method_not_allowed"),
    **_codes(
        409,
        "conflict",
        "task_exists",
        "device_exists",
        "session_used",
        "upload_in_progress",
        "version_mismatch",
        "round_open",
        "stale_commit",
        "leadership_lost",
        # update refusals that conflict with the server's state
        "duplicate_update",
        "too_stale",
        "future_version",
        "not_current_round",
        "round_closed",
        "late",
        # secure aggregation: releases the mask service refuses
        "release_refused",
        "release_overlap",
        "release_below_threshold",
        "release_unknown_update",
        # differential privacy: the task's budget allows no further version
        "privacy_budget_reached",
    ),
    **_codes(410, "session_expired"),
    **_codes(413, "payload_too_large"),
    **_codes(415, "unsupported_media_type", "unsupported_content_encoding"),
    **_codes(
        422,
        "update_rejected",
        "tensor_count",
        "shape_mismatch",
        "dtype_mismatch",
        "non_finite",
        "norm_exceeded",
        "base_version_mismatch",
        "encoding_mismatch",
        "seed_refused",
    ),
    **_codes(429, "rate_limited"),
    # nginx's "client closed request": never sent (nobody is listening), logged and counted
    **_codes(499, "client_disconnected"),
    **_codes(
        500,
        "internal_error",
        public="internal server error",
    ),
    **_codes(500, "storage_error", public="the server could not store or read data"),
    **_codes(500, "invalid_snapshot", public="a stored aggregator state is unusable"),
    **_codes(
        500,
        "modeling_error",
        "export_failed",
        "parity_failed",
        "simulator_error",
        "diverged",
        public="the model could not be prepared",
    ),
    **_codes(503, "unavailable", public="the service is unavailable; retry later"),
    **_codes(503, "database_busy", public="the database is busy; retry shortly"),
    **_codes(503, "starting", public="the server is starting; retry shortly"),
    **_codes(503, "draining", public="the server is shutting down; retry elsewhere or later"),
    **_codes(503, "queue_unavailable", public="updates cannot be made durable now; retry"),
    **_codes(503, "redis_unavailable", public="a coordination backend is unavailable; retry"),
    **_codes(503, "sync_unavailable", public="sync rounds are not served here; retry"),
    **_codes(503, "task_not_led", public="no aggregator leads this task yet; retry shortly"),
    **_codes(503, "secagg_unavailable", public="the mask service is unavailable; retry later"),
}


def spec_of(code: str) -> ErrorSpec:
    """The wire meaning of ``code``; an unlisted code is an internal error."""
    return CODES.get(code) or CODES["internal_error"]


class AsyncflError(Exception):
    """Root of every error the server raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.details = details or {}

    @property
    def status(self) -> int:
        return spec_of(self.code).status

    @property
    def public_message(self) -> str:
        """What a client may read: the message below 500, the code's own text above."""
        spec = spec_of(self.code)
        return spec.public if spec.status >= 500 else self.message

    def to_body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.public_message}
        if self.details and self.status < 500:
            error["details"] = self.details
        if request_id is not None:
            error["request_id"] = request_id
        return {"error": error}


class ConfigError(AsyncflError):
    code = "invalid_config"


class BadRequest(AsyncflError):
    code = "bad_request"


class UpdateRejected(BadRequest):
    """An update the aggregation core or the ingest refuses; ``code`` names the reason."""

    code = "update_rejected"


class Unauthorized(AsyncflError):
    code = "unauthorized"


class Forbidden(AsyncflError):
    code = "forbidden"


class NotFound(AsyncflError):
    code = "not_found"


class Conflict(AsyncflError):
    code = "conflict"


class SessionError(AsyncflError):
    code = "invalid_session"


class PayloadTooLarge(AsyncflError):
    code = "payload_too_large"


class RateLimited(AsyncflError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unavailable(AsyncflError):
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class StorageError(AsyncflError):
    code = "storage_error"


class DatabaseBusy(StorageError):
    """The database is overloaded (no pooled connection or no lock in time): a 503 with
    Retry-After, not a server fault. Handlers of StorageError treat it as one."""

    code = "database_busy"
    retry_after = 1.0
