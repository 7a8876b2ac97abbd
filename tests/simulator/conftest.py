from __future__ import annotations

import os
from pathlib import Path

import pytest

from client_sdk.bundle import Bundle
from simulator.training import OnnxTrainer


@pytest.fixture(scope="session")
def mlp_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo MLP, exported once per session into the cache tests/modeling also uses
    (or once for good under ``$ASYNCFL_TEST_EXPORTS_DIR``, as the server tests do)."""
    from tests.modeling.support import BundleCache  # imports torch: only when needed

    shared = os.environ.get("ASYNCFL_TEST_EXPORTS_DIR")
    root = Path(shared) if shared else tmp_path_factory.getbasetemp()
    return BundleCache(root / "modeling-bundles")("mlp")


@pytest.fixture(scope="session")
def onnx_trainer(mlp_bundle_dir: Path) -> OnnxTrainer:
    return OnnxTrainer(Bundle.load(mlp_bundle_dir))
