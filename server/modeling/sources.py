"""A digest of the exporter's own sources, to key caches of exported bundles.

Torch-free. An export cached under a model's name alone outlives a change to the model
(the zoo's CNN lost its max-pools) or to the tracing; keyed by this digest too, such an
export is simply made again.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

MODELING_DIR = Path(__file__).resolve().parent


def sources_digest(folder: Path) -> str:
    """sha256 over the names and contents of the ``*.py`` files in ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@cache
def exporter_digest() -> str:
    """The digest of ``server/modeling`` (the zoo, tracing, decompositions, parity)."""
    return sources_digest(MODELING_DIR)
