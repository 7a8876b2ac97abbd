"""Trace a model's step functions and export them as plain ONNX graphs.

The route (FACTS.md): ``make_fx(tracing_mode="symbolic")`` with the decomposition table
of :mod:`server.modeling.decompositions`, then ``torch.onnx.export(dynamo=True)`` of the
traced GraphModule with a dynamic batch dimension on ``x`` and ``y``, opset 20. Graph
passes afterwards drop MaxPool indices nobody reads, dead nodes and per-node metadata.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import onnx
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

from server.modeling import steps
from server.modeling.decompositions import decomposition_table
from server.modeling.errors import ExportError
from server.modeling.optimizers import GraphOptimizer

logger = logging.getLogger(__name__)

OPSET = 20
_TRACE_BATCHES = (17, 19, 23, 29, 31, 37, 41)  # a batch size no other dim shares


@dataclass(frozen=True)
class Signature:
    """Names of a graph's inputs and outputs; ``batched`` inputs have a dynamic dim 0."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batched: frozenset[str]


def build_graphs(
    module: nn.Module,
    names: Sequence[str],
    params: Sequence[torch.Tensor],
    task_type: str,
    optimizer: GraphOptimizer,
    state: Sequence[tuple[str, torch.Tensor]],
    example: tuple[torch.Tensor, torch.Tensor],
) -> dict[str, bytes]:
    """Serialised ``train_step``, ``eval_step`` and ``infer`` graphs of ``module``."""
    x, y = _resize_batch(example, [*params, *(t for _, t in state)])
    state_names = [n for n, _ in state]
    lr = torch.tensor(0.1, dtype=torch.float32)
    batched = frozenset({"x", "y"})
    train = Signature(
        (*names, *state_names, "x", "y", "lr"),
        (*(f"next.{n}" for n in (*names, *state_names)), "loss"),
        batched,
    )
    evaluate = Signature((*names, "x", "y"), ("loss_sum", "correct", "count"), batched)
    infer = Signature((*names, "x"), ("output",), batched)
    train_fn = steps.make_train_step(module, names, task_type, optimizer, len(state))
    return {
        "train_step": export_graph(train_fn, [*params, *(t for _, t in state), x, y, lr], train),
        "eval_step": export_graph(
            steps.make_eval_step(module, names, task_type), [*params, x, y], evaluate
        ),
        "infer": export_graph(steps.make_infer(module, names), [*params, x], infer),
    }


def export_graph(fn: steps.Step, args: Sequence[torch.Tensor], signature: Signature) -> bytes:
    """Trace ``fn`` on ``args`` to core ATen and export it to ONNX bytes."""
    started = time.perf_counter()
    try:
        with _quiet_exporter():
            traced = make_fx(
                fn, tracing_mode="symbolic", decomposition_table=decomposition_table()
            )(*_fake_inputs(args, signature))
            traced.graph.eliminate_dead_code()
            traced.recompile()
            batch = torch.export.Dim("batch")
            dynamic = tuple(
                {0: batch} if n in signature.batched else None for n in signature.inputs
            )
            program = torch.onnx.export(
                traced,
                tuple(args),
                dynamo=True,
                external_data=False,
                input_names=list(signature.inputs),
                output_names=list(signature.outputs),
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                verbose=False,
                # onnxscript's rewrites match constants approximately (x + 1e-8 -> x,
                # x * 0.99999 -> x): they silently dropped Adam's eps. ORT optimizes
                # exactly when it loads the graph.
                optimize=False,
            )
    except ExportError:
        raise
    except Exception as exc:  # tracing and the exporter raise many unrelated types
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot export {fn.__name__}: {summary}") from exc
    if program is None:
        raise ExportError(f"cannot export {fn.__name__}: the exporter returned nothing")
    model = program.model_proto
    drop_unused_pool_indices(model)
    prune_dead_nodes(model)
    for node in model.graph.node:  # exporter stack traces: 80% of the bytes a device fetches
        del node.metadata_props[:]
        node.doc_string = ""
    _check_signature(model, signature, fn.__name__)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    logger.debug("exported %s in %.1f s", fn.__name__, time.perf_counter() - started)
    return data


def _fake_inputs(args: Sequence[torch.Tensor], signature: Signature) -> list[torch.Tensor]:
    """Fake tensors whose only symbolic dim is the batch: tracing with every dim
    symbolic is several times slower and gains nothing (weights and features are fixed)."""
    mode = FakeTensorMode(shape_env=ShapeEnv())
    fakes: list[torch.Tensor] = []
    for name, tensor in zip(signature.inputs, args, strict=True):
        dims = [
            DimDynamic.DYNAMIC if i == 0 and name in signature.batched else DimDynamic.STATIC
            for i in range(tensor.dim())
        ]
        context: StatelessSymbolicContext[Any, Any] = StatelessSymbolicContext(dynamic_sizes=dims)
        fakes.append(mode.from_tensor(tensor, symbolic_context=context))
    return fakes


def drop_unused_pool_indices(model: onnx.ModelProto) -> int:
    """Remove MaxPool ``Indices`` outputs nothing consumes; returns how many."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input}
    used |= {out.name for out in graph.output}
    dropped = 0
    for node in graph.node:
        if node.op_type == "MaxPool" and len(node.output) == 2 and node.output[1] not in used:
            del node.output[1]
            dropped += 1
    return dropped


def prune_dead_nodes(model: onnx.ModelProto) -> int:
    """Remove nodes and initializers that no graph output depends on; returns nodes removed."""
    graph = model.graph
    needed = {out.name for out in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output if name):
            keep.append(node)
            needed.update(node.input)
            needed.update(_subgraph_inputs(node))
    removed = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    live = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live)
    return removed


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in [attr.g, *attr.graphs] if attr.type in (5, 10) else []:
            names.update(name for inner in sub.node for name in inner.input)
            names.update(name for inner in sub.node for name in _subgraph_inputs(inner))
    return names


def _check_signature(model: onnx.ModelProto, signature: Signature, name: str) -> None:
    inputs = tuple(i.name for i in model.graph.input)
    outputs = tuple(o.name for o in model.graph.output)
    if inputs != signature.inputs or outputs != signature.outputs:
        raise ExportError(
            f"{name}: exported graph has inputs {inputs} and outputs {outputs}, "
            f"expected {signature.inputs} and {signature.outputs}"
        )


def _resize_batch(
    example: tuple[torch.Tensor, torch.Tensor], others: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat the example rows to a batch size no other dim has (symbolic tracing would
    otherwise tie the batch to any equal-sized dim)."""
    x, y = example
    taken = {d for t in (*others, x, y) for d in t.shape[1:]} | {d for t in others for d in t.shape}
    size = next((b for b in _TRACE_BATCHES if b not in taken), None)
    if size is None:
        raise ExportError(f"no free trace batch size among {_TRACE_BATCHES}")
    rows = torch.arange(size) % x.shape[0]
    return x[rows].clone(), y[rows].clone()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress chatter and internal warnings out of the output."""
    chatty = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [log.level for log in chatty]
    for log in chatty:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        for warning in caught:
            logger.debug("exporter warning: %s", warning.message)
    finally:
        for log, level in zip(chatty, levels, strict=True):
            log.setLevel(level)
