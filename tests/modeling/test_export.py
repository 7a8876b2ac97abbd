"""Exporting the zoo: parity per model, the bundle layout, optimizers, the CNN's graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from client_sdk.bundle import BUNDLE_FILES, Bundle
from client_sdk.trainer import Trainer, TrainPlan
from server.modeling import ZOO_MODELS, ExportError
from server.modeling.export import export_bundle, publish
from server.modeling.optimizers import OPTIMIZERS
from server.modeling.zoo import ZOO, resolve
from tests.modeling.support import PARITY_STEPS, BundleCache

TASKS = {"logreg": "classification", "mlp": "classification", "cnn": "classification"}


@pytest.mark.parametrize("model", ZOO_MODELS)
def test_zoo_model_export_matches_torch_eager(bundles: BundleCache, model: str) -> None:
    bundle = Bundle.load(bundles(model))

    parity = bundle.manifest.extra["parity"]
    assert parity["steps"] == PARITY_STEPS
    assert parity["max_param_diff"] <= 1e-5
    assert parity["max_loss_diff"] <= 1e-5
    assert bundle.manifest.task_type == TASKS.get(model, "binary")
    assert bundle.manifest.num_params == sum(p.numel() for p in ZOO[model].factory().parameters())


def test_zoo_names_match_the_torch_free_constant() -> None:
    assert tuple(ZOO) == ZOO_MODELS


def test_bundle_holds_graphs_params_and_manifest(bundles: BundleCache) -> None:
    directory = bundles("logreg")

    manifest = Bundle.load(directory).manifest

    assert sorted(p.name for p in directory.iterdir()) == sorted(BUNDLE_FILES)
    assert [(s.name, s.shape) for s in manifest.params] == [
        ("linear.weight", (10, 64)),
        ("linear.bias", (10,)),
    ]
    assert (manifest.x.shape, manifest.x.dtype) == ((None, 64), "float32")
    assert (manifest.y.shape, manifest.y.dtype) == ((None,), "int64")
    assert (manifest.loss, manifest.opset, manifest.optimizer_state) == ("cross_entropy", 20, ())
    assert manifest.torch_version.startswith("2.")
    assert manifest.onnx_version


def test_graphs_take_a_dynamic_batch(bundles: BundleCache) -> None:
    graph = onnx.load(bundles("mlp") / "train_step.onnx").graph
    x = next(i for i in graph.input if i.name == "x")

    batch = x.type.tensor_type.shape.dim[0]

    assert batch.dim_param
    assert not batch.HasField("dim_value")


def test_cnn_train_step_routes_no_gradient_by_a_comparison(bundles: BundleCache) -> None:
    ops = {n.op_type for n in onnx.load(bundles("cnn") / "train_step.onnx").graph.node}

    # max-pool (first maximum) and ReLU (sign) backward pick where a gradient goes; on
    # near-ties one ulp flips the pick, and WASM and native ORT then drift apart
    assert not ops & {"MaxPool", "ArgMax", "ReduceMax", "Relu", "Greater", "Col2Im"}
    assert {"Conv", "ConvTranspose", "Elu"} <= ops


def test_max_pool_backward_runs_without_indices(bundles: BundleCache) -> None:
    bundle_dir = bundles("tests.modeling.support:pooled_cnn")
    nodes = onnx.load(bundle_dir / "train_step.onnx").graph.node

    pools = [n for n in nodes if n.op_type == "MaxPool"]

    assert Bundle.load(bundle_dir).manifest.extra["parity"]["max_param_diff"] <= 1e-5
    assert pools
    assert all(len(n.output) == 1 for n in pools)  # no indices: ORT's fast kernel
    assert sum(n.op_type == "Col2Im" for n in nodes) == 1  # the gradient's scatter


def test_momentum_state_is_a_graph_input_and_output(bundles: BundleCache) -> None:
    manifest = Bundle.load(bundles("logreg", "momentum")).manifest

    assert [s.name for s in manifest.optimizer_state] == [
        "momentum.linear.weight",
        "momentum.linear.bias",
    ]
    assert [s.shape for s in manifest.optimizer_state] == [s.shape for s in manifest.params]
    assert manifest.optimizer_hparams == {"momentum": 0.9, "weight_decay": 0.0}
    assert manifest.extra["parity"]["max_param_diff"] <= 1e-5


def test_adam_export_matches_torch_adam(bundles: BundleCache) -> None:
    manifest = Bundle.load(bundles("logreg", "adam")).manifest

    assert manifest.optimizer_state[-1].name == "adam_step"
    assert len(manifest.optimizer_state) == 2 * len(manifest.params) + 1
    assert manifest.extra["parity"]["max_param_diff"] <= 1e-5
    assert set(OPTIMIZERS) == {"sgd", "momentum", "adam"}


def test_module_factory_regression_model_exports_and_trains(bundles: BundleCache) -> None:
    bundle = Bundle.load(bundles("tests.modeling.support:linear_regression"))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 5), dtype=np.float32)
    y = x.sum(1)
    trainer = Trainer(bundle)

    before = trainer.evaluate(bundle.initial_params, x, y)
    result = trainer.train(bundle.initial_params, x, y, TrainPlan(lr=0.1, batch_size=8, epochs=5))
    trained = [p + d for p, d in zip(bundle.initial_params, result.delta, strict=True)]
    after = trainer.evaluate(trained, x, y)

    assert (bundle.manifest.loss, before.accuracy) == ("mse", None)
    assert after.loss < before.loss / 2


def test_unknown_model_is_a_clear_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown model 'resnet'"):
        export_bundle("resnet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_factory_must_return_a_zoo_entry() -> None:
    with pytest.raises(ExportError, match="must return a ZooEntry"):
        resolve("tests.modeling.support:TinyRegression")


def test_unknown_optimizer_hyperparameter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no hyperparameters"):
        export_bundle("logreg", tmp_path / "out", optimizer_hparams={"nesterov": 1.0})


def test_publish_replaces_a_bundle_but_never_other_files(
    bundles: BundleCache, tmp_path: Path
) -> None:
    bundle = Bundle.load(bundles("logreg"))
    out, other = tmp_path / "bundle", tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")

    publish(bundle, out)
    publish(bundle, out)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "other"]
    assert Bundle.load(out).manifest == bundle.manifest
    with pytest.raises(ExportError, match="holds other files"):
        publish(bundle, other)
