"""The ATen decomposition table used when tracing a training step.

Everything is lowered to core ATen first (``core_aten_decompositions``): without it
onnxscript's ``nll_loss_forward`` fakes ``total_weight`` and cross-entropy gradients
come out N times too large (see FACTS.md). On top of that:

- ``convolution_backward`` has no ONNX lowering; it becomes ConvTranspose (input grad)
  and a Conv over the transposed input (weight grad).
- ``max_pool2d_with_indices_backward`` for non-overlapping pools (kernel == stride, no
  padding) is rebuilt without indices: compare the input with the upsampled pooled
  output, keep the *first* maximum of each window (as torch does) through a
  power-of-two priority map and a second max-pool, then scatter the gradient with
  Col2Im. The forward pool's indices are then unused, and the graph pass in
  :mod:`server.modeling.graphs` drops them, so ONNX Runtime runs its fast MaxPool
  instead of the one that computes indices. Other pools scatter through the indices.
- ``threshold_backward`` (ReLU) multiplies by a mask instead of a Where, which ONNX
  Runtime runs several times faster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._decomp import core_aten_decompositions

from server.modeling.errors import ExportError

aten = torch.ops.aten
Table = dict[Any, Callable[..., Any]]

# Ops whose ONNX lowering is better than their ATen decomposition.
_KEEP = (aten.col2im.default, aten.upsample_nearest2d.default)


def decomposition_table() -> Table:
    """The table passed to ``make_fx`` when tracing the exported graphs."""
    table: Table = dict(core_aten_decompositions())
    for op in _KEEP:
        table.pop(op, None)
    table[aten.convolution_backward.default] = convolution_backward
    table[aten.max_pool2d_with_indices_backward.default] = max_pool2d_backward
    table[aten.threshold_backward.default] = threshold_backward
    table[aten.empty_permuted.default] = empty_permuted
    return table


def empty_permuted(
    size: Sequence[int], physical_layout: Sequence[int], **kwargs: Any
) -> torch.Tensor:
    """Memory layout is meaningless in ONNX: a plain empty tensor."""
    del physical_layout
    return torch.empty(size, dtype=kwargs.get("dtype"), device=kwargs.get("device"))


def threshold_backward(
    grad_output: torch.Tensor, self: torch.Tensor, threshold: float
) -> torch.Tensor:
    return grad_output * (self > threshold).to(grad_output.dtype)


def convolution_backward(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias_sizes: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    transposed: bool,
    output_padding: Sequence[int],
    groups: int,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of an ordinary (not transposed, ungrouped) convolution."""
    del bias_sizes, output_padding
    if transposed or groups != 1:
        raise ExportError("only ordinary convolutions (groups=1, not transposed) can be trained")
    spatial = range(2, input.dim())
    kernel = [weight.shape[d] for d in spatial]
    grad_input = grad_weight = grad_bias = None
    if output_mask[0]:
        # output_padding restores the input size lost to the stride's floor division
        out_pad = [
            input.shape[d] - ((grad_output.shape[d] - 1) * s - 2 * p + dl * (k - 1) + 1)
            for d, s, p, dl, k in zip(spatial, stride, padding, dilation, kernel, strict=True)
        ]
        grad_input = aten.convolution(
            grad_output, weight, None, stride, padding, dilation, True, out_pad, 1
        )
    if output_mask[1]:
        # weight grad = correlation of the input with the output grad, batch as channels
        full = aten.convolution(
            input.transpose(0, 1),
            grad_output.transpose(0, 1),
            None,
            dilation,
            padding,
            stride,
            False,
            [0] * len(kernel),
            1,
        ).transpose(0, 1)
        for axis, k in zip(spatial, kernel, strict=True):
            full = full.narrow(axis, 0, k)
        grad_weight = full
    if output_mask[2]:
        grad_bias = grad_output.sum([0, *spatial])
    return grad_input, grad_weight, grad_bias


def max_pool2d_backward(
    grad_output: torch.Tensor,
    self: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
    indices: torch.Tensor,
) -> torch.Tensor:
    k = _window(self, kernel_size, stride, padding, dilation)
    if k is None:
        return _scatter_by_indices(grad_output, self, indices)
    n, c, h, w = self.shape
    pooled = _max_pool(self, k)
    first = _max_pool(_priority_where_max(self, pooled, k), k)  # priority of the first max
    windows = k * k
    flags = torch.tensor([float(2 ** (windows - 1 - i)) for i in range(windows)], dtype=self.dtype)
    picked = first.reshape(n, c, 1, -1) == flags.reshape(1, 1, windows, 1)
    columns = picked.to(self.dtype) * grad_output.reshape(n, c, 1, -1)
    grad: torch.Tensor = aten.col2im(
        columns.reshape(n, c * windows, -1), [h, w], [k, k], [1, 1], [0, 0], [k, k]
    )
    return grad


def _window(
    x: torch.Tensor,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> int | None:
    """The window size when the pool tiles the input exactly (fast path), else None."""
    kh, kw = (list(kernel_size) * 2)[:2]
    sh, sw = (list(stride) * 2)[:2] if stride else (kh, kw)
    square = kh == kw == sh == sw
    plain = all(p == 0 for p in padding) and all(d == 1 for d in dilation)
    wide = x.dtype in (torch.float32, torch.float64)  # holds the 2**(k*k-1) priorities
    if x.dim() != 4 or not square or not plain or not wide or kh * kh > 64:
        return None
    return kh if x.shape[2] % kh == 0 and x.shape[3] % kh == 0 else None


def _max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    # the indices output is left unused; graphs.py removes it from the ONNX MaxPool
    pooled: torch.Tensor = aten.max_pool2d_with_indices(x, [k, k], [k, k])[0]
    return pooled


def _priority_where_max(x: torch.Tensor, pooled: torch.Tensor, k: int) -> torch.Tensor:
    """2**(k*k-1-i) where x equals its window's max (i = row-major position), else 0."""
    h, w = x.shape[2], x.shape[3]
    upsampled: torch.Tensor = aten.upsample_nearest2d(pooled, [h, w])
    index = torch.arange(k * k, dtype=torch.float32).reshape(k, k)
    priority = torch.pow(2.0, (k * k - 1) - index).to(x.dtype).repeat(h // k, w // k)
    return (x == upsampled).to(x.dtype) * priority


def _scatter_by_indices(
    grad_output: torch.Tensor, x: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    n, c = x.shape[0], x.shape[1]
    flat = torch.zeros(n, c, x.shape[2] * x.shape[3], dtype=grad_output.dtype)
    flat = flat.scatter_add(2, indices.flatten(2), grad_output.flatten(2))
    return flat.view(x.shape)
