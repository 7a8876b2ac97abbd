"""Bundles load only when every sha256, the parameter count and the shapes check out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from client_sdk.bundle import (
    GRAPH_NAMES,
    MANIFEST_FILE,
    PARAMS_FILE,
    Bundle,
    Manifest,
    decode_params,
    encode_params,
    sha256_hex,
)
from client_sdk.errors import BundleError
from tests.modeling.support import BundleCache


@pytest.fixture
def bundle_copy(bundles: BundleCache, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundles("logreg"), tmp_path / "bundle"))


def _rewrite_params(directory: Path, params: list[np.ndarray]) -> None:
    """Replace the parameters file and fix its sha256, so only the content is wrong."""
    data = encode_params(params)
    (directory / PARAMS_FILE).write_bytes(data)
    manifest = json.loads((directory / MANIFEST_FILE).read_bytes())
    manifest["params_sha256"] = sha256_hex(data)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_load_verifies_and_round_trips(bundle_copy: Path, tmp_path: Path) -> None:
    bundle = Bundle.load(bundle_copy)

    bundle.save(tmp_path / "again")
    again = Bundle.load(tmp_path / "again")

    assert again.manifest == bundle.manifest
    assert [again.graph(n) == bundle.graph(n) for n in GRAPH_NAMES] == [True] * 3
    pairs = zip(again.initial_params, bundle.initial_params, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    assert bundle.manifest.num_params == 650


@pytest.mark.parametrize("name", [*(f"{g}.onnx" for g in GRAPH_NAMES), PARAMS_FILE])
def test_a_corrupted_file_is_refused_by_sha256(bundle_copy: Path, name: str) -> None:
    data = bytearray((bundle_copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle_copy / name).write_bytes(bytes(data))

    with pytest.raises(BundleError, match=f"{name} sha256 mismatch"):
        Bundle.load(bundle_copy)


def test_a_missing_parameter_tensor_is_refused(bundle_copy: Path) -> None:
    params = Bundle.load(bundle_copy).initial_params
    _rewrite_params(bundle_copy, params[:1])

    with pytest.raises(BundleError, match="expected 2 parameter tensors, got 1"):
        Bundle.load(bundle_copy)


def test_a_parameter_with_the_wrong_shape_is_refused(bundle_copy: Path) -> None:
    weight, bias = Bundle.load(bundle_copy).initial_params
    _rewrite_params(bundle_copy, [weight.reshape(64, 10), bias])

    with pytest.raises(BundleError, match=r"linear.weight: expected float32\[10, 64\]"):
        Bundle.load(bundle_copy)


def test_a_parameter_with_the_wrong_dtype_is_refused(bundle_copy: Path) -> None:
    weight, bias = Bundle.load(bundle_copy).initial_params
    _rewrite_params(bundle_copy, [weight.astype(np.float64), bias])

    with pytest.raises(BundleError, match=r"linear\.weight: expected float32"):
        Bundle.load(bundle_copy)


def test_a_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "infer.onnx").unlink()

    with pytest.raises(BundleError, match=r"cannot read .*infer\.onnx"):
        Bundle.load(bundle_copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
        (lambda m: m.update(task_type="ranking"), "task_type 'ranking'"),
        (lambda m: m["graphs"].pop("infer"), "graphs must map"),
        (lambda m: m["params"][0].update(dtype="complex64"), "unsupported dtype"),
        (lambda m: m["x"].update(shape=[64]), "must start with the batch dim"),
    ],
)
def test_an_inconsistent_manifest_is_refused(bundle_copy: Path, edit: object, message: str) -> None:
    manifest = json.loads((bundle_copy / MANIFEST_FILE).read_bytes())
    edit(manifest)  # type: ignore[operator]

    with pytest.raises(BundleError, match=message):
        Manifest.from_json(json.dumps(manifest).encode())


def test_a_manifest_that_is_not_json_is_refused() -> None:
    with pytest.raises(BundleError, match="not valid JSON"):
        Manifest.from_json(b"\x00{")


def test_from_parts_without_params_verifies_the_graphs(bundle_copy: Path) -> None:
    manifest = (bundle_copy / MANIFEST_FILE).read_bytes()
    graphs = {n: (bundle_copy / f"{n}.onnx").read_bytes() for n in GRAPH_NAMES}

    bundle = Bundle.from_parts(manifest, graphs, None)

    assert bundle.initial_params == []
    with pytest.raises(BundleError, match=r"train_step\.onnx sha256 mismatch"):
        Bundle.from_parts(manifest, {**graphs, "train_step": b"x"}, None)


def test_decode_params_checks_the_specs(bundle_copy: Path) -> None:
    bundle = Bundle.load(bundle_copy)
    data = encode_params(bundle.initial_params)

    decoded = decode_params(data, bundle.manifest.params)

    assert [a.shape for a in decoded] == [(10, 64), (10,)]
    with pytest.raises(BundleError, match="not valid wire tensors"):
        decode_params(b"\xc1", bundle.manifest.params)
