"""Errors raised while exporting models to training bundles.

Hierarchy (under :class:`server.errors.AsyncflError`)::

    ModelingError
    ├── ExportError        the model cannot be exported (unsupported layer, bad spec)
    │   └── ParityError    the exported graphs disagree with torch eager; nothing written
    └── DatasetError       unknown dataset name
"""

from __future__ import annotations

from server.errors import AsyncflError


class ModelingError(AsyncflError):
    code = "modeling_error"
    status = 422


class ExportError(ModelingError):
    code = "export_failed"


class ParityError(ExportError):
    """The ONNX graphs do not reproduce torch eager within the tolerance."""

    code = "parity_failed"


class DatasetError(ModelingError):
    code = "unknown_dataset"
    status = 404
