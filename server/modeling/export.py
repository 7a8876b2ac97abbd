"""Export a torch model to a verified training bundle: graphs, parameters, manifest.

:func:`export_bundle` resolves the model, traces its three graphs, runs the parity gate
against torch eager and only then writes the bundle directory (atomically: a temporary
sibling directory renamed into place). A failed gate raises :class:`ParityError` and
leaves the file system untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from client_sdk.bundle import (
    BUNDLE_FILES,
    FORMAT_VERSION,
    GRAPH_NAMES,
    Bundle,
    Manifest,
    TensorSpec,
    encode_params,
    sha256_hex,
)
from client_sdk.errors import BundleError
from server.modeling.errors import ExportError
from server.modeling.graphs import OPSET, build_graphs
from server.modeling.optimizers import GraphOptimizer, make_optimizer
from server.modeling.parity import check_parity, parity_batches
from server.modeling.zoo import ZooEntry, resolve

logger = logging.getLogger(__name__)


def export_bundle(
    model: str | ZooEntry,
    out_dir: Path,
    *,
    optimizer: str = "sgd",
    optimizer_hparams: dict[str, float] | None = None,
    parity_steps: int = 50,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> Bundle:
    """Export ``model`` (a zoo name or ``"module:factory"``) into ``out_dir``.

    The initial parameters come from the model factory under ``torch.manual_seed(seed)``.
    Raises ExportError for models that cannot be exported and ParityError when the
    graphs disagree with torch eager by more than ``tolerance`` over ``parity_steps``.
    """
    if parity_steps < 1:
        raise ExportError("parity_steps must be >= 1: every export is checked")
    bundle = build_bundle(
        model,
        optimizer=optimizer,
        optimizer_hparams=optimizer_hparams,
        parity_steps=parity_steps,
        tolerance=tolerance,
        seed=seed,
    )
    publish(bundle, Path(out_dir))
    return bundle


def build_bundle(
    model: str | ZooEntry,
    *,
    optimizer: str = "sgd",
    optimizer_hparams: dict[str, float] | None = None,
    parity_steps: int = 50,
    tolerance: float = 1e-5,
    seed: int = 0,
) -> Bundle:
    """Everything :func:`export_bundle` does except writing files."""
    entry = resolve(model)
    opt = make_optimizer(optimizer, optimizer_hparams)
    torch.manual_seed(seed)
    module = entry.factory()
    names, params = _parameters(module, entry.name)
    state = [
        (n, torch.zeros(s))
        for n, s in opt.state_specs(
            [(n, tuple(p.shape)) for n, p in zip(names, params, strict=True)]
        )
    ]
    example = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in entry.example_batch)
    started = time.perf_counter()
    graphs = build_graphs(
        module, names, params, entry.task_type, opt, state, (example[0], example[1])
    )
    logger.info("traced %s in %.1f s", entry.name, time.perf_counter() - started)
    params_data = encode_params([p.numpy() for p in params])
    draft = _manifest(entry, names, params, opt, state, graphs, params_data, extra={})
    bundle = _assemble(draft, graphs, params_data)
    report = check_parity(
        bundle,
        entry.factory,
        opt,
        parity_batches(entry, parity_steps, seed=seed),
        lr=opt.parity_lr(entry.lr),
        tolerance=tolerance,
    )
    logger.info("parity of %s: %s", entry.name, report.to_dict())
    extra: dict[str, Any] = {"dataset": entry.dataset, "lr": entry.lr, "parity": report.to_dict()}
    return _assemble(
        _manifest(entry, names, params, opt, state, graphs, params_data, extra), graphs, params_data
    )


def publish(bundle: Bundle, out_dir: Path) -> None:
    """Write ``bundle`` into ``out_dir``, replacing a previous bundle there.

    The files are written into a sibling directory that is then renamed into place, so
    ``out_dir`` never holds a partial bundle.
    """
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir} is a file; refusing to replace it")
        strangers = [p.name for p in out_dir.iterdir() if p.name not in BUNDLE_FILES]
        if strangers:
            raise ExportError(
                f"{out_dir} holds other files {strangers[:3]}; refusing to replace it"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    retired = staging.with_name(staging.name + ".old")
    try:
        bundle.save(staging)
        if out_dir.exists():
            os.replace(out_dir, retired)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _parameters(module: nn.Module, name: str) -> tuple[list[str], list[torch.Tensor]]:
    buffers = [n for n, _ in module.named_buffers()]
    if buffers:
        raise ExportError(
            f"{name}: buffers {buffers[:3]} (e.g. BatchNorm statistics) are not supported"
        )
    dropout = [
        n
        for n, m in module.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
    ]
    if dropout:
        raise ExportError(f"{name}: dropout layers {dropout[:3]} are not supported")
    named = list(module.named_parameters())
    if not named:
        raise ExportError(f"{name}: the model has no parameters to train")
    for pname, p in named:
        if p.dtype != torch.float32 or not p.requires_grad:
            raise ExportError(f"{name}: parameter {pname} must be a trainable float32 tensor")
    return [n for n, _ in named], [p.detach().clone() for _, p in named]


def _spec(
    name: str, tensor: torch.Tensor | np.ndarray[Any, Any], *, batched: bool = False
) -> TensorSpec:
    shape: tuple[int | None, ...] = tuple(int(d) for d in tensor.shape)
    if batched:
        shape = (None, *shape[1:])
    dtype = str(tensor.dtype).removeprefix("torch.")
    return TensorSpec(name=name, shape=shape, dtype=dtype)


def _manifest(
    entry: ZooEntry,
    names: list[str],
    params: list[torch.Tensor],
    opt: GraphOptimizer,
    state: list[tuple[str, torch.Tensor]],
    graphs: dict[str, bytes],
    params_data: bytes,
    extra: dict[str, Any],
) -> Manifest:
    x, y = entry.example_batch
    return Manifest(
        format_version=FORMAT_VERSION,
        model=entry.name,
        task_type=entry.task_type,
        params=tuple(_spec(n, p) for n, p in zip(names, params, strict=True)),
        x=_spec("x", x, batched=True),
        y=_spec("y", y, batched=True),
        optimizer=opt.name,
        optimizer_hparams=dict(opt.hparams),
        optimizer_state=tuple(_spec(n, t) for n, t in state),
        loss=entry.loss,
        opset=OPSET,
        graphs={name: sha256_hex(graphs[name]) for name in GRAPH_NAMES},
        params_sha256=sha256_hex(params_data),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        extra=extra,
    )


def _assemble(manifest: Manifest, graphs: dict[str, bytes], params_data: bytes) -> Bundle:
    try:
        return Bundle.from_parts(manifest.to_json(), graphs, params_data)
    except BundleError as exc:  # our own output must verify; anything else is a bug here
        raise ExportError(f"the exported bundle does not verify: {exc}") from exc
