from __future__ import annotations

import pytest

from tests.modeling.support import BundleCache


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.getbasetemp() / "modeling-bundles")
