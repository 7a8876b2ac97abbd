"""Turn a version's parameters into a deployable ONNX model (weights baked in)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from client_sdk.bundle import Manifest
from server.errors import StorageError


def inference_model(
    infer_graph: bytes, manifest: Manifest, params: list[np.ndarray[Any, Any]]
) -> bytes:
    """``infer.onnx`` takes the parameters as inputs; make them initializers instead."""
    try:
        model = onnx.load_model_from_string(infer_graph)
    except Exception as exc:  # onnx raises DecodeError/ValueError variants
        raise StorageError(f"stored inference graph is unreadable: {exc}") from exc
    names = [spec.name for spec in manifest.params]
    by_name = dict(zip(names, params, strict=True))
    graph = model.graph
    kept = [i for i in graph.input if i.name not in by_name]
    baked = [i.name for i in graph.input if i.name in by_name]
    if len(baked) != len(names):
        raise StorageError("inference graph inputs do not match the manifest's parameters")
    del graph.input[:]
    graph.input.extend(kept)
    for name in baked:
        graph.initializer.append(numpy_helper.from_array(np.asarray(by_name[name]), name))
    return bytes(model.SerializeToString())
