"""The hand-written decompositions reproduce torch's own backward kernels (eagerly)."""

from __future__ import annotations

import pytest
import torch
from onnx import TensorProto, helper

from server.modeling.decompositions import (
    convolution_backward,
    max_pool2d_backward,
    threshold_backward,
)
from server.modeling.graphs import drop_unused_pool_indices

aten = torch.ops.aten


def _pool_case(kernel: int, stride: int, size: int, seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    # few distinct values: most windows hold ties, which must go to the first maximum
    x = torch.randint(0, 3, (2, 3, size, size), generator=generator).to(torch.float32)
    out, indices = aten.max_pool2d_with_indices(x, [kernel, kernel], [stride, stride])
    grad = torch.randn(out.shape, generator=generator)
    return x, indices, grad


@pytest.mark.parametrize(("kernel", "stride", "size"), [(2, 2, 8), (3, 3, 9), (3, 2, 9)])
def test_max_pool_backward_matches_torch_including_ties(
    kernel: int, stride: int, size: int
) -> None:
    x, indices, grad = _pool_case(kernel, stride, size, seed=kernel + stride)
    args = ([kernel, kernel], [stride, stride], [0, 0], [1, 1], False, indices)

    ours = max_pool2d_backward(grad, x, *args)
    expected = aten.max_pool2d_with_indices_backward(grad, x, *args)

    assert torch.equal(ours, expected)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation"), [(1, 0, 1), (2, 1, 1), (2, 0, 2), (3, 2, 1)]
)
def test_convolution_backward_matches_torch(stride: int, padding: int, dilation: int) -> None:
    generator = torch.Generator().manual_seed(stride * 10 + padding)
    x = torch.randn(3, 4, 11, 10, generator=generator, dtype=torch.float64)
    w = torch.randn(5, 4, 3, 3, generator=generator, dtype=torch.float64)
    conv = ([stride] * 2, [padding] * 2, [dilation] * 2, False, [0, 0], 1)
    out = aten.convolution(x, w, None, *conv)
    grad = torch.randn(out.shape, generator=generator, dtype=torch.float64)

    ours = convolution_backward(grad, x, w, [5], *conv, [True, True, True])
    expected = aten.convolution_backward(grad, x, w, [5], *conv, [True, True, True])

    for mine, theirs in zip(ours, expected, strict=True):
        assert mine is not None
        torch.testing.assert_close(mine, theirs)


def test_relu_backward_masks_the_gradient() -> None:
    out = torch.tensor([0.0, 2.0, 0.0, 1.0])
    grad = torch.tensor([5.0, 6.0, 7.0, 8.0])

    assert torch.equal(threshold_backward(grad, out, 0.0), aten.threshold_backward(grad, out, 0.0))


def test_unused_max_pool_indices_are_dropped() -> None:
    nodes = [
        helper.make_node("MaxPool", ["x"], ["y", "unused"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["x"], ["z", "i"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    value = helper.make_tensor_value_info
    inputs = [value("x", TensorProto.FLOAT, [1, 1, 4, 4])]
    outputs = [value(n, TensorProto.FLOAT if n != "i" else TensorProto.INT64, None) for n in "yzi"]
    model = helper.make_model(helper.make_graph(nodes, "pools", inputs, outputs))

    dropped = drop_unused_pool_indices(model)

    assert dropped == 1
    assert [list(n.output) for n in model.graph.node] == [["y"], ["z", "i"]]
