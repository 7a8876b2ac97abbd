"""Synthetic-size training bundles for the load tools, built without torch.

A load test needs a task whose updates have a chosen size (~100k float32 parameters
for 400 KB uploads, ~1M for 4 MB) and must not depend on exporting a zoo model. This
module writes a real bundle for a linear softmax classifier ``x @ W.T + b`` straight
with ``onnx.helper``: ``train_step`` (one SGD step of mean cross-entropy), ``eval_step``
and ``infer``, with the signatures :class:`client_sdk.trainer.Trainer` runs. The fleet
never trains (it uploads deltas of the right shapes); the graphs are still valid so a
real SDK device could train the same task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from client_sdk.bundle import FORMAT_VERSION, Manifest, encode_params, sha256_hex

OPSET = 20

# name -> (features, classes); parameters = classes * (features + 1)
SIZES: dict[str, tuple[int, int]] = {
    "linear_1k": (64, 16),
    "linear_10k": (100, 100),
    "linear_100k": (1000, 100),
    "linear_1m": (1000, 1000),
}


@dataclass(frozen=True)
class BundleParts:
    """What the admin API's ``bundle`` field takes, plus the manifest for the fleet."""

    manifest: bytes
    graphs: dict[str, bytes]
    params: bytes

    def upload_body(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "graphs": self.graphs, "params": self.params}

    @property
    def param_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(p["shape"]) for p in json.loads(self.manifest)["params"]]


def num_params(model: str) -> int:
    features, classes = SIZES[model]
    return classes * (features + 1)


def linear_bundle(model: str, *, seed: int = 0) -> BundleParts:
    """The bundle of the named linear classifier (see :data:`SIZES`)."""
    import onnx  # only here: run.py and bench_ingest.py import this module lazily

    features, classes = SIZES[model]
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((classes, features)) * 0.01).astype(np.float32)
    bias = np.zeros(classes, np.float32)
    graphs = {
        "train_step": _serialise(onnx, _train_step(onnx, features, classes)),
        "eval_step": _serialise(onnx, _eval_step(onnx, features, classes)),
        "infer": _serialise(onnx, _infer(onnx, features, classes)),
    }
    params = encode_params([weight, bias])
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model=model,
        task_type="classification",
        params=(_spec("weight", [classes, features]), _spec("bias", [classes])),
        x=_spec("x", [None, features]),
        y=_spec("y", [None], "int64"),
        optimizer="sgd",
        optimizer_hparams={},
        optimizer_state=(),
        loss="cross_entropy",
        opset=OPSET,
        graphs={name: sha256_hex(data) for name, data in graphs.items()},
        params_sha256=sha256_hex(params),
        torch_version="none",
        onnx_version=onnx.__version__,
        extra={"synthetic": "load_tests.bundle linear softmax classifier"},
    )
    return BundleParts(manifest.to_json(), graphs, params)


def _spec(name: str, shape: list[int | None], dtype: str = "float32") -> Any:
    from client_sdk.bundle import TensorSpec

    return TensorSpec(name, tuple(shape), dtype)


def _serialise(onnx: Any, graph: Any) -> bytes:
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="load_tests"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _io(onnx: Any, features: int, classes: int) -> dict[str, Any]:
    f32, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    vi = onnx.helper.make_tensor_value_info
    return {
        "weight": vi("weight", f32, [classes, features]),
        "bias": vi("bias", f32, [classes]),
        "x": vi("x", f32, ["batch", features]),
        "y": vi("y", i64, ["batch"]),
        "lr": vi("lr", f32, []),
    }


def _train_step(onnx: Any, features: int, classes: int) -> Any:
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    io = _io(onnx, features, classes)
    consts = [
        h.make_tensor("depth", onnx.TensorProto.INT64, [1], [classes]),
        h.make_tensor("onehot_values", f32, [2], [0.0, 1.0]),
        h.make_tensor("axis0", onnx.TensorProto.INT64, [1], [0]),
    ]
    nodes = [
        h.make_node("Gemm", ["x", "weight", "bias"], ["logits"], transB=1),
        h.make_node("SoftmaxCrossEntropyLoss", ["logits", "y"], ["loss"], reduction="mean"),
        h.make_node("Softmax", ["logits"], ["prob"], axis=1),
        h.make_node("OneHot", ["y", "depth", "onehot_values"], ["onehot"], axis=-1),
        h.make_node("Sub", ["prob", "onehot"], ["diff"]),
        h.make_node("Shape", ["x"], ["x_shape"], start=0, end=1),
        h.make_node("Cast", ["x_shape"], ["n"], to=f32),
        h.make_node("Div", ["diff", "n"], ["grad_logits"]),
        h.make_node("Gemm", ["grad_logits", "x"], ["grad_w"], transA=1),
        h.make_node("ReduceSum", ["grad_logits", "axis0"], ["grad_b"], keepdims=0),
        h.make_node("Mul", ["lr", "grad_w"], ["step_w"]),
        h.make_node("Mul", ["lr", "grad_b"], ["step_b"]),
        h.make_node("Sub", ["weight", "step_w"], ["next.weight"]),
        h.make_node("Sub", ["bias", "step_b"], ["next.bias"]),
    ]
    outputs = [
        h.make_tensor_value_info("next.weight", f32, [classes, features]),
        h.make_tensor_value_info("next.bias", f32, [classes]),
        h.make_tensor_value_info("loss", f32, []),
    ]
    inputs = [io[name] for name in ("weight", "bias", "x", "y", "lr")]
    return h.make_graph(nodes, "train_step", inputs, outputs, initializer=consts)


def _eval_step(onnx: Any, features: int, classes: int) -> Any:
    h, f32, i64 = onnx.helper, onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    io = _io(onnx, features, classes)
    nodes = [
        h.make_node("Gemm", ["x", "weight", "bias"], ["logits"], transB=1),
        h.make_node("SoftmaxCrossEntropyLoss", ["logits", "y"], ["loss_sum"], reduction="sum"),
        h.make_node("ArgMax", ["logits"], ["pred"], axis=1, keepdims=0),
        h.make_node("Equal", ["pred", "y"], ["hit"]),
        h.make_node("Cast", ["hit"], ["hit_i"], to=i64),
        h.make_node("ReduceSum", ["hit_i"], ["correct"], keepdims=0),
        h.make_node("Shape", ["x"], ["x_shape"], start=0, end=1),
        h.make_node("Squeeze", ["x_shape"], ["count"]),
    ]
    outputs = [
        h.make_tensor_value_info("loss_sum", f32, []),
        h.make_tensor_value_info("correct", i64, []),
        h.make_tensor_value_info("count", i64, []),
    ]
    inputs = [io[name] for name in ("weight", "bias", "x", "y")]
    return h.make_graph(nodes, "eval_step", inputs, outputs)


def _infer(onnx: Any, features: int, classes: int) -> Any:
    h, f32 = onnx.helper, onnx.TensorProto.FLOAT
    io = _io(onnx, features, classes)
    nodes = [h.make_node("Gemm", ["x", "weight", "bias"], ["output"], transB=1)]
    outputs = [h.make_tensor_value_info("output", f32, ["batch", classes])]
    inputs = [io[name] for name in ("weight", "bias", "x")]
    return h.make_graph(nodes, "infer", inputs, outputs)
