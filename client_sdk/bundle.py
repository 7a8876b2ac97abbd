"""Training artifact bundles: the ONNX graphs, initial parameters and manifest of a model.

A bundle directory holds ``manifest.json``, ``train_step.onnx``, ``eval_step.onnx``,
``infer.onnx`` and ``params.msgpack`` (a msgpack list of wire tensors, see
:mod:`client_sdk.wire`). The manifest records the sha256 of every graph and of the
parameters file; loading verifies all of them plus the parameter count, shapes and
dtypes, and refuses anything inconsistent with a :class:`BundleError`.

This module is torch-free and onnx-free: a device imports it to check what it downloaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client_sdk import wire
from client_sdk.errors import BundleError, WireFormatError

FORMAT_VERSION = 1
GRAPH_NAMES: tuple[str, ...] = ("train_step", "eval_step", "infer")
TASK_TYPES: tuple[str, ...] = ("classification", "regression", "binary")
MANIFEST_FILE = "manifest.json"
PARAMS_FILE = "params.msgpack"
BUNDLE_FILES: tuple[str, ...] = (
    MANIFEST_FILE,
    *(f"{name}.onnx" for name in GRAPH_NAMES),
    PARAMS_FILE,
)

Array = np.ndarray[Any, Any]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a graph input; ``None`` in ``shape`` is the batch dim."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def size(self) -> int:
        """Number of scalars; only defined for fully static shapes."""
        if any(d is None for d in self.shape):
            raise BundleError(f"{self.name}: shape {self.shape} is dynamic")
        return math.prod(d for d in self.shape if d is not None)

    def matches(self, array: Array) -> bool:
        """True when ``array`` has this dtype and shape (any size on dynamic dims)."""
        return (
            array.dtype.name == self.dtype
            and array.ndim == len(self.shape)
            and all(d is None or d == n for d, n in zip(self.shape, array.shape, strict=True))
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, obj: Any, *, where: str) -> TensorSpec:
        if not isinstance(obj, dict) or set(obj) != {"name", "shape", "dtype"}:
            raise BundleError(f"manifest {where}: expected a map with name, shape and dtype")
        name, shape, dtype = obj["name"], obj["shape"], obj["dtype"]
        if not isinstance(name, str) or not name:
            raise BundleError(f"manifest {where}: name must be a non-empty string")
        if not isinstance(shape, list) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape
        ):
            raise BundleError(f"manifest {where}: shape must be a list of ints >= 0 or null")
        if not isinstance(dtype, str) or dtype not in wire.WIRE_DTYPES:
            raise BundleError(f"manifest {where}: unsupported dtype {dtype!r}")
        return cls(name=name, shape=tuple(shape), dtype=dtype)


@dataclass(frozen=True)
class Manifest:
    """What a bundle contains; serialised as ``manifest.json``."""

    format_version: int
    model: str
    task_type: str
    params: tuple[TensorSpec, ...]
    x: TensorSpec
    y: TensorSpec
    optimizer: str
    optimizer_hparams: dict[str, float]
    optimizer_state: tuple[TensorSpec, ...]
    loss: str
    opset: int
    graphs: dict[str, str]
    params_sha256: str
    torch_version: str
    onnx_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(spec.size for spec in self.params)

    def to_json(self) -> bytes:
        body = {
            "format_version": self.format_version,
            "model": self.model,
            "task_type": self.task_type,
            "params": [s.to_dict() for s in self.params],
            "x": self.x.to_dict(),
            "y": self.y.to_dict(),
            "optimizer": self.optimizer,
            "optimizer_hparams": dict(self.optimizer_hparams),
            "optimizer_state": [s.to_dict() for s in self.optimizer_state],
            "loss": self.loss,
            "opset": self.opset,
            "graphs": dict(self.graphs),
            "params_sha256": self.params_sha256,
            "torch_version": self.torch_version,
            "onnx_version": self.onnx_version,
            "extra": self.extra,
        }
        return json.dumps(body, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate ``manifest.json``; anything malformed is a BundleError."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(f"manifest is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise BundleError("manifest must be a JSON object")
        version = _field(obj, "format_version", int)
        if version != FORMAT_VERSION:
            raise BundleError(
                f"manifest format_version {version} is not supported (expected {FORMAT_VERSION})"
            )
        task_type = _field(obj, "task_type", str)
        if task_type not in TASK_TYPES:
            raise BundleError(f"manifest task_type {task_type!r} is not one of {TASK_TYPES}")
        graphs = _field(obj, "graphs", dict)
        if set(graphs) != set(GRAPH_NAMES) or not all(_is_sha(v) for v in graphs.values()):
            raise BundleError(f"manifest graphs must map {GRAPH_NAMES} to sha256 hex digests")
        hparams = _field(obj, "optimizer_hparams", dict)
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in hparams.values()
        ):
            raise BundleError("manifest optimizer_hparams must map names to numbers")
        params_sha = _field(obj, "params_sha256", str)
        if not _is_sha(params_sha):
            raise BundleError("manifest params_sha256 must be a sha256 hex digest")
        extra = obj.get("extra", {})
        if not isinstance(extra, dict):
            raise BundleError("manifest extra must be an object")
        manifest = cls(
            format_version=version,
            model=_field(obj, "model", str),
            task_type=task_type,
            params=_specs(obj, "params"),
            x=TensorSpec.from_dict(obj.get("x"), where="x"),
            y=TensorSpec.from_dict(obj.get("y"), where="y"),
            optimizer=_field(obj, "optimizer", str),
            optimizer_hparams={k: float(v) for k, v in hparams.items()},
            optimizer_state=_specs(obj, "optimizer_state"),
            loss=_field(obj, "loss", str),
            opset=_field(obj, "opset", int),
            graphs=dict(graphs),
            params_sha256=params_sha,
            torch_version=_field(obj, "torch_version", str),
            onnx_version=_field(obj, "onnx_version", str),
            extra=extra,
        )
        for spec in (manifest.x, manifest.y):
            if not spec.shape or spec.shape[0] is not None:
                raise BundleError(f"manifest: {spec.name} must start with the batch dim (null)")
        for spec in manifest.params + manifest.optimizer_state:
            if None in spec.shape:
                raise BundleError(f"manifest: parameter {spec.name} has a dynamic shape")
        names = [s.name for s in manifest.params + manifest.optimizer_state]
        if len(set(names)) != len(names) or {"x", "y", "lr"} & set(names):
            raise BundleError("manifest: parameter and state names must be unique")
        return manifest


def _field(obj: dict[str, Any], key: str, kind: type) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BundleError(f"manifest field {key!r} must be a {kind.__name__}")
    return value


def _specs(obj: dict[str, Any], key: str) -> tuple[TensorSpec, ...]:
    items = _field(obj, key, list)
    return tuple(TensorSpec.from_dict(s, where=f"{key}[{i}]") for i, s in enumerate(items))


def _is_sha(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def encode_params(params: Sequence[Array]) -> bytes:
    """Serialise parameters as a msgpack list of wire tensors."""
    return wire.pack(wire.encode_tensors(list(params)))


def decode_params(data: bytes, specs: Sequence[TensorSpec]) -> list[Array]:
    """Decode a parameters file and check it against ``specs`` (read-only arrays)."""
    try:
        arrays = wire.decode_tensors(wire.unpack(data), where="params")
    except WireFormatError as exc:
        raise BundleError(f"parameters are not valid wire tensors: {exc}") from exc
    check_params(arrays, specs)
    return arrays


def check_params(arrays: Sequence[Array], specs: Sequence[TensorSpec]) -> None:
    """Raise BundleError unless ``arrays`` match ``specs`` one by one."""
    problem = params_mismatch(arrays, specs)
    if problem is not None:
        raise BundleError(problem)


def params_mismatch(arrays: Sequence[Array], specs: Sequence[TensorSpec]) -> str | None:
    """Describe how ``arrays`` differ from ``specs`` (count, dtype, shape), or None."""
    if len(arrays) != len(specs):
        return f"expected {len(specs)} parameter tensors, got {len(arrays)}"
    for spec, array in zip(specs, arrays, strict=True):
        if not spec.matches(array):
            return (
                f"parameter {spec.name}: expected {spec.dtype}{list(spec.shape)}, "
                f"got {array.dtype.name}{list(array.shape)}"
            )
    return None


class Bundle:
    """A verified bundle held in memory: manifest, graph bytes and initial parameters.

    ``initial_params`` is empty when the bundle was built from parts without a
    parameters file (the SDK then fetches the parameters of a model version separately).
    """

    def __init__(
        self,
        manifest: Manifest,
        graphs: Mapping[str, bytes],
        initial_params: list[Array],
        *,
        params_data: bytes | None = None,
    ) -> None:
        self.manifest = manifest
        self._graphs = dict(graphs)
        self.initial_params = initial_params
        self._params_data = params_data

    def graph(self, name: str) -> bytes:
        """The serialised ONNX graph ``train_step``, ``eval_step`` or ``infer``."""
        try:
            return self._graphs[name]
        except KeyError:
            raise BundleError(f"bundle has no graph {name!r}; graphs: {GRAPH_NAMES}") from None

    @classmethod
    def from_parts(
        cls, manifest: bytes, graphs: Mapping[str, bytes], params: bytes | None
    ) -> Bundle:
        """Build a bundle from downloaded bytes, verifying every sha256 and the params."""
        parsed = Manifest.from_json(manifest)
        missing = set(GRAPH_NAMES) - set(graphs)
        if missing:
            raise BundleError(f"bundle is missing graphs: {sorted(missing)}")
        for name in GRAPH_NAMES:
            digest = sha256_hex(graphs[name])
            if digest != parsed.graphs[name]:
                raise BundleError(
                    f"{name}.onnx sha256 mismatch: manifest says {parsed.graphs[name]}, "
                    f"file has {digest}"
                )
        initial: list[Array] = []
        if params is not None:
            digest = sha256_hex(params)
            if digest != parsed.params_sha256:
                raise BundleError(
                    f"{PARAMS_FILE} sha256 mismatch: manifest says {parsed.params_sha256}, "
                    f"file has {digest}"
                )
            initial = decode_params(params, parsed.params)
        graph_bytes = {name: graphs[name] for name in GRAPH_NAMES}
        return cls(parsed, graph_bytes, initial, params_data=params)

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        """Read and verify the bundle stored in ``directory``."""
        directory = Path(directory)

        def read(name: str) -> bytes:
            try:
                return (directory / name).read_bytes()
            except OSError as exc:
                raise BundleError(f"cannot read {directory / name}: {exc.strerror}") from exc

        graphs = {name: read(f"{name}.onnx") for name in GRAPH_NAMES}
        return cls.from_parts(read(MANIFEST_FILE), graphs, read(PARAMS_FILE))

    def save(self, directory: Path) -> None:
        """Write the bundle files into ``directory`` (created if needed)."""
        if not self.initial_params:
            raise BundleError("cannot save a bundle without initial parameters")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {f"{name}.onnx": self._graphs[name] for name in GRAPH_NAMES}
        files[PARAMS_FILE] = self._params_data or encode_params(self.initial_params)
        files[MANIFEST_FILE] = self.manifest.to_json()  # last: its presence marks completion
        for name, data in files.items():
            tmp = directory / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, directory / name)
