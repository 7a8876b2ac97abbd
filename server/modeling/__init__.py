"""Torch models -> plain ONNX training bundles that any stock ONNX Runtime can train.

Importing this package does not import torch (the server imports it without the
``export`` extra): :func:`export_bundle` loads torch when it is called.

Modules: ``zoo`` (the models), ``datasets`` (torch-free data), ``steps`` (the traced
functions), ``optimizers`` (in-graph client optimizers), ``decompositions`` and
``graphs`` (tracing and ONNX export), ``parity`` (the gate), ``export`` (bundles),
``bench`` and ``cli`` (``asyncfl model export|check``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from server.modeling.datasets import DATASETS, load_dataset
from server.modeling.errors import DatasetError, ExportError, ModelingError, ParityError

if TYPE_CHECKING:
    from server.modeling.export import export_bundle

ZOO_MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn", "embedding")

__all__ = [
    "DATASETS",
    "ZOO_MODELS",
    "DatasetError",
    "ExportError",
    "ModelingError",
    "ParityError",
    "export_bundle",
    "load_dataset",
]


def __getattr__(name: str) -> Any:
    if name == "export_bundle":  # imports torch: only on first use
        from server.modeling.export import export_bundle

        return export_bundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
