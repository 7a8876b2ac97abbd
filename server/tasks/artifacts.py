"""A task's artifacts: its training bundle and held-out set, into and out of blobs.

Zoo models are exported in a child process (``asyncfl model export``), so the server
process never imports torch; exports are cached under ``<data_dir>/exports``, keyed by
model, optimizer and a digest of the exporter's sources
(:func:`server.modeling.sources.exporter_digest`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk.bundle import Bundle, Manifest, decode_params, encode_params
from client_sdk.errors import BundleError, WireFormatError
from client_sdk.wire import decode_tensor, encode_tensor, pack, unpack
from server.errors import AsyncflError, BadRequest, ConfigError, StorageError
from server.modeling.sources import exporter_digest
from server.storage.blobs import LocalBlobStore

logger = logging.getLogger(__name__)

GRAPHS = ("train_step", "eval_step", "infer")
EXPORT_TIMEOUT_S = 600.0
CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam")


async def export_zoo_bundle(
    model: str, optimizer: str, exports_dir: Path, *, python: str = sys.executable
) -> Bundle:
    """Export (or reuse a cached export of) a zoo model with a client optimizer."""
    if optimizer not in CLIENT_OPTIMIZERS:
        raise ConfigError(f"client optimizer must be one of {CLIENT_OPTIMIZERS}")
    key = hashlib.sha256(json.dumps([model, optimizer, exporter_digest()]).encode()).hexdigest()
    out = exports_dir / f"{_slug(model)}-{optimizer}-{key[:16]}"
    if (out / "manifest.json").exists():
        try:
            return await asyncio.to_thread(Bundle.load, out)
        except BundleError as exc:
            logger.warning("cached export %s is unusable (%s); exporting again", out, exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        python,
        "-m",
        "server.cli",
        "--log-level",
        "WARNING",
        "model",
        "export",
        "--model",
        model,
        "--out",
        str(out),
        "--optimizer",
        optimizer,
    ]
    logger.info("exporting model %s (%s) to %s", model, optimizer, out)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), EXPORT_TIMEOUT_S)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise StorageError(f"export of {model!r} took longer than {EXPORT_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise ConfigError(f"cannot export model {model!r}: " + " | ".join(tail))
    try:
        return await asyncio.to_thread(Bundle.load, out)
    except BundleError as exc:
        raise StorageError(f"export of {model!r} produced an unusable bundle: {exc}") from exc


def bundle_from_upload(obj: Any) -> Bundle:
    """An uploaded bundle: ``{"manifest": bin, "graphs": {name: bin}, "params": bin}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("graphs"), dict):
        raise BadRequest("bundle must be a map with manifest, graphs and params", code="bad_bundle")
    graphs = obj["graphs"]
    if set(graphs) != set(GRAPHS) or not all(isinstance(g, bytes) for g in graphs.values()):
        raise BadRequest(
            f"bundle graphs must be exactly {list(GRAPHS)} as bytes", code="bad_bundle"
        )
    manifest, params = obj.get("manifest"), obj.get("params")
    if not isinstance(manifest, bytes) or not isinstance(params, bytes):
        raise BadRequest("bundle manifest and params must be bytes", code="bad_bundle")
    try:
        return Bundle.from_parts(manifest, dict(graphs), params)
    except BundleError as exc:
        raise BadRequest(f"bundle refused: {exc}", code="bad_bundle") from exc


async def store_bundle(blobs: LocalBlobStore, bundle: Bundle) -> dict[str, str]:
    """Put a bundle's parts in the blob store; return name -> sha256."""
    artifacts = {"manifest": await blobs.put(bundle.manifest.to_json())}
    for name in GRAPHS:
        artifacts[name] = await blobs.put(bundle.graph(name))
    artifacts["params0"] = await blobs.put(encode_params(bundle.initial_params))
    return artifacts


async def load_bundle(blobs: LocalBlobStore, artifacts: dict[str, str]) -> Bundle:
    manifest = await blobs.get(artifacts["manifest"])
    graphs = {name: await blobs.get(artifacts[name]) for name in GRAPHS}
    try:
        return Bundle.from_parts(manifest, graphs, None)
    except BundleError as exc:
        raise StorageError(f"stored bundle is corrupt: {exc}") from exc


def eval_set_from_request(
    obj: Any, manifest: Manifest
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """``{"dataset": name}`` (a built-in held-out split) or ``{"x": tensor, "y": tensor}``."""
    if obj is None:
        return None
    if not isinstance(obj, dict) or set(obj) not in ({"dataset"}, {"x", "y"}):
        raise BadRequest(
            'evaluation must be {"dataset": name} or {"x": tensor, "y": tensor}',
            code="bad_evaluation",
        )
    if "dataset" in obj:
        from server.modeling.datasets import load_dataset

        name = obj["dataset"]
        try:
            if not isinstance(name, str):
                raise ValueError(name)
            _, _, x, y = load_dataset(name)
        except (KeyError, ValueError, AsyncflError) as exc:
            raise BadRequest(f"unknown dataset {name!r}", code="bad_evaluation") from exc
    else:
        try:
            x, y = decode_tensor(obj["x"], where="x"), decode_tensor(obj["y"], where="y")
        except WireFormatError as exc:
            raise BadRequest(str(exc), code="bad_evaluation") from exc
    _check_against_spec(x, y, manifest)
    return x, y


def _check_against_spec(
    x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], manifest: Manifest
) -> None:
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y) or len(x) == 0:
        raise BadRequest(
            "evaluation x and y must be non-empty arrays of equal length", code="bad_evaluation"
        )
    for name, arr, spec in (("x", x, manifest.x), ("y", y, manifest.y)):
        if arr.dtype.name != spec.dtype or tuple(arr.shape[1:]) != tuple(spec.shape[1:]):
            raise BadRequest(
                f"evaluation {name} is {arr.dtype.name}{list(arr.shape)}, the model takes "
                f"{spec.dtype}{list(spec.shape)}",
                code="bad_evaluation",
            )


def encode_eval_set(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> bytes:
    return pack({"x": encode_tensor(x), "y": encode_tensor(y)})


def decode_eval_set(data: bytes) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    obj = unpack(data)
    return decode_tensor(obj["x"], where="x"), decode_tensor(obj["y"], where="y")


def decode_version_params(data: bytes, manifest: Manifest) -> list[np.ndarray[Any, Any]]:
    try:
        return decode_params(data, manifest.params)
    except (BundleError, WireFormatError) as exc:
        raise StorageError(f"stored parameters are corrupt: {exc}") from exc


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]
