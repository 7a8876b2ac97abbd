"""The parity gate refuses wrong graphs, writes nothing, and catches the nll_loss trap."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import helper, numpy_helper

from client_sdk.bundle import GRAPH_NAMES
from server.modeling import ParityError, export
from server.modeling import graphs as graphs_module
from server.modeling.decompositions import decomposition_table
from server.modeling.parity import parity_batches
from server.modeling.zoo import ZOO
from tests.modeling.support import BundleCache


def _scale_lr(graph_bytes: bytes, factor: float) -> bytes:
    """The same train step with ``lr`` multiplied inside: every update scaled."""
    model = onnx.load_from_string(graph_bytes)
    for node in model.graph.node:
        node.input[:] = ["lr.scaled" if name == "lr" else name for name in node.input]
    model.graph.initializer.append(numpy_helper.from_array(numpy_helper.np.float32(factor), "k"))
    model.graph.node.insert(0, helper.make_node("Mul", ["lr", "k"], ["lr.scaled"]))
    data: bytes = model.SerializeToString()
    return data


def test_gate_refuses_a_graph_that_scales_gradients_and_writes_nothing(
    bundles: BundleCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = bundles("logreg")
    doctored = {name: (good / f"{name}.onnx").read_bytes() for name in GRAPH_NAMES}
    doctored["train_step"] = _scale_lr(doctored["train_step"], 2.0)
    monkeypatch.setattr(export, "build_graphs", lambda *args, **kwargs: doctored)
    out = tmp_path / "nested" / "bundle"

    with pytest.raises(ParityError, match="disagree with torch eager") as caught:
        export.export_bundle("logreg", out, parity_steps=5)

    assert caught.value.code == "parity_failed"
    assert caught.value.details["max_param_diff"] > 1e-3
    assert list(tmp_path.iterdir()) == []


def test_gate_catches_the_nll_loss_trap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The FACTS.md trap: skip the core ATen decompositions and onnxscript's nll_loss
    # lowering fakes total_weight, scaling cross-entropy gradients by the batch size.
    trap = {op: fn for op, fn in decomposition_table().items() if "nll_loss" not in str(op)}
    monkeypatch.setattr(graphs_module, "decomposition_table", lambda: trap)

    with pytest.raises(ParityError, match="parameters differ"):
        export.export_bundle("logreg", tmp_path / "out", parity_steps=3)

    assert not (tmp_path / "out").exists()


def test_parity_batches_end_with_a_smaller_batch() -> None:
    batches = parity_batches(ZOO["mlp"], steps=6, batch_size=32)

    sizes = [len(x) for x, _ in batches]

    assert sizes[:-1] == [32] * 5
    assert 0 < sizes[-1] < 32
    assert all(len(x) == len(y) for x, y in batches)
