"""Inputs shared by the decoder tests and the fuzz target: message trees and a manifest."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from client_sdk.bundle import Manifest, TensorSpec


def trees(
    keys: st.SearchStrategy[Any] | None = None,
    *,
    max_int: int = 2**64,
    max_leaves: int = 25,
) -> st.SearchStrategy[Any]:
    """Anything a msgpack or JSON message could hold, and some it must not: integers
    beyond 64 bits, NaN, bin values and bin map keys."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-max_int, max_value=max_int),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=8),
    )
    if keys is None:
        keys = st.one_of(st.text(max_size=6), st.binary(max_size=3))
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def small_manifest(features: int = 64, classes: int = 10) -> Manifest:
    """A classifier's manifest, enough to check evaluation sets against."""
    return Manifest(
        format_version=1,
        model="test",
        task_type="classification",
        params=(TensorSpec("w", (features, classes), "float32"),),
        x=TensorSpec("x", (None, features), "float32"),
        y=TensorSpec("y", (None,), "int64"),
        optimizer="sgd",
        optimizer_hparams={},
        optimizer_state=(),
        loss="cross_entropy",
        opset=20,
        graphs={},
        params_sha256="0" * 64,
        torch_version="",
        onnx_version="",
    )
