"""Errors raised by the client SDK.

Hierarchy::

    SdkError
    ├── WireFormatError      a body or tensor does not follow the wire format
    ├── BundleError          an artifact bundle is missing, corrupt or inconsistent
    └── TrainingError        ONNX Runtime failed while training or evaluating
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
