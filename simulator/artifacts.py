"""The model bundle a simulation trains with: loaded from a cache directory, exported
there on first use (that needs torch, the ``export`` extra; later runs do not).

The cache holds one bundle per model under ``<cache>/<model>-<digest>`` (the digest of
the exporter's sources, so a changed zoo model is exported again); the default cache is
``~/.cache/asyncfl/bundles``. A bundle exported with ``asyncfl model export --model
mlp --out DIR`` can be used directly by pointing ``--bundle-dir`` at it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from client_sdk.bundle import MANIFEST_FILE, Bundle
from client_sdk.errors import BundleError
from server.errors import AsyncflError
from server.modeling.sources import exporter_digest
from simulator.errors import SimulatorError

__all__ = ["DEFAULT_CACHE", "load_bundle"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "asyncfl" / "bundles"

# Models the simulator adds to the zoo (60-feature inputs for LEAF Synthetic).
_SIM_MODELS = {
    "synthetic-logreg": "simulator.models:synthetic_logreg",
    "synthetic-mlp": "simulator.models:synthetic_mlp",
}


def load_bundle(
    model: str, cache_dir: Path | None = None, *, bundle_dir: Path | None = None
) -> Bundle:
    """``bundle_dir`` if given, else ``<cache_dir>/<model>-<digest>``, exporting it if
    missing (the digest of the exporter's sources: a changed zoo model is exported again)."""
    if bundle_dir is not None:
        return _load(bundle_dir)
    path = (cache_dir or DEFAULT_CACHE) / f"{model.replace(':', '_')}-{exporter_digest()[:12]}"
    if (path / MANIFEST_FILE).is_file():
        return _load(path)
    try:
        from server.modeling import export_bundle
    except ImportError as exc:
        raise SimulatorError(
            f"no bundle for {model!r} in {path} and the exporter is unavailable ({exc}); "
            "install the export extra or pass --bundle-dir"
        ) from exc
    logger.info("exporting %s to %s (once; later runs reuse it)", model, path)
    try:
        return export_bundle(_SIM_MODELS.get(model, model), path)
    except AsyncflError as exc:
        raise SimulatorError(f"cannot export model {model!r}: {exc}") from exc


def _load(path: Path) -> Bundle:
    try:
        return Bundle.load(path)
    except BundleError as exc:
        raise SimulatorError(f"cannot load the bundle in {path}: {exc}") from exc
