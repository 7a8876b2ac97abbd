"""Zoo datasets: shapes, dtypes, determinism, and a torch-free import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from server.modeling import DATASETS, DatasetError, load_dataset

SHAPES = {
    "digits": ((64,), "float32", "int64"),
    "digits28": ((1, 28, 28), "float32", "int64"),
    "ctr": ((4, 3), "int64", "float32"),
}


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_has_the_graph_dtypes(name: str) -> None:
    x_train, y_train, x_test, y_test = load_dataset(name)
    features, x_dtype, y_dtype = SHAPES[name]

    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.shape[1:] == features
        assert len(x) == len(y) > 0
        assert (x.dtype.name, y.dtype.name) == (x_dtype, y_dtype)


def test_datasets_are_deterministic_copies() -> None:
    first = load_dataset("ctr")
    first[0][:] = 0

    second = load_dataset("ctr")

    assert second[0].any()
    assert 0.1 < second[1].mean() < 0.5  # a plausible click-through rate


def test_image_datasets_are_scaled_to_unit_range() -> None:
    for name in ("digits", "digits28"):
        x = load_dataset(name)[0]
        assert x.min() >= 0.0
        assert np.isclose(x.max(), 1.0)


def test_unknown_dataset_is_refused() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_modeling_package_imports_without_torch() -> None:
    code = (
        "import sys, server.modeling, server.modeling.cli, server.modeling.bench\n"
        "server.modeling.load_dataset('ctr')\n"
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
