"""Errors raised by the client SDK.

Hierarchy::

    SdkError
    ├── WireFormatError      a body or tensor does not follow the wire format
    ├── BundleError          an artifact bundle is missing, corrupt or inconsistent
    ├── TrainingError        ONNX Runtime failed while training or evaluating
    ├── TransportError       no answer from the server (connection, timeout)
    ├── ServerError          the server answered with an error (code, status)
    ├── StorageError         the device's storage folder or example store failed
    └── ConfigError          the client was set up wrongly (options, credentials, data)
"""

from __future__ import annotations


class SdkError(Exception):
    """Root of every error the SDK raises on purpose."""


class WireFormatError(SdkError):
    """A message or tensor does not follow the asyncfl wire format."""


class BundleError(SdkError):
    """An artifact bundle is missing, corrupt (sha256 mismatch) or inconsistent."""


class TrainingError(SdkError):
    """ONNX Runtime failed while running a training or evaluation graph."""


class TransportError(SdkError):
    """The request got no answer: connection refused or reset, timeout."""


class ServerError(SdkError):
    """The server answered with an error document ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class StorageError(SdkError):
    """The storage folder (state, caches) or the SQLite example store failed."""


class ConfigError(SdkError):
    """The client was configured wrongly: bad options, missing credentials, unusable data."""
