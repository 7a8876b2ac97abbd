"""Errors raised by the client SDK.

Hierarchy::

    SdkError
    ├── WireFormatError      a body or tensor does not follow the wire format
    ├── BundleError          an artifact bundle is missing, corrupt or inconsistent
    ├── TrainingError        ONNX Runtime failed while training or evaluating
    ├── TransportError       no answer from the server (connection, timeout)
    └── ServerError          the server answered with an error (code, status)
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
