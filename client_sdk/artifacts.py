"""Fetch a session's graphs and parameters through the disk cache, verified.

Graphs are content-addressed: the body must hash to the digest the check-in named, and
the bundle check (:meth:`Bundle.from_parts`) ties every graph to the manifest. A cached,
fresh entry costs no request at all, so a second run downloads no graph bytes. A failed
verification drops the entry and fetches once more before giving up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from client_sdk.api import ServerApi
from client_sdk.bundle import GRAPH_NAMES, Array, Bundle, Manifest, decode_params, sha256_hex
from client_sdk.cache import DiskCache
from client_sdk.errors import BundleError
from client_sdk.trainer import Trainer

logger = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("manifest", *GRAPH_NAMES)


@dataclass
class Traffic:
    """Body bytes downloaded, by kind (what the cache saved shows up as zeros)."""

    graph_bytes: int = 0
    param_bytes: int = 0
    requests: int = 0


class ArtifactStore:
    """Bundles (with their ONNX Runtime trainer, kept in memory) and parameters."""

    def __init__(
        self,
        api: ServerApi,
        cache: DiskCache,
        token: Callable[[], Awaitable[str]],
        *,
        threads: int = 1,
        clock: Callable[[], float],
    ) -> None:
        self._api = api
        self._cache = cache
        self._token = token
        self._threads = threads
        self._clock = clock
        self._trainer: tuple[str, Trainer] | None = None  # (manifest digest, trainer)
        self.traffic = Traffic()

    async def trainer(self, artifacts: Mapping[str, str]) -> Trainer:
        """The trainer for the bundle ``artifacts`` names (digests by part)."""
        try:
            digests = {part: str(artifacts[part]) for part in PARTS}
        except KeyError as exc:
            raise BundleError(f"check-in named no artifact {exc}") from exc
        if self._trainer is not None and self._trainer[0] == digests["manifest"]:
            return self._trainer[1]
        parts = {part: await self._blob(digest) for part, digest in digests.items()}
        manifest = parts.pop("manifest")
        try:
            bundle = Bundle.from_parts(manifest, parts, None)
        except BundleError:
            for digest in digests.values():  # cannot tell which part lied: drop them all
                self._cache.delete(f"graph-{digest}")
            raise
        trainer = Trainer(bundle, threads=self._threads)
        self._trainer = (digests["manifest"], trainer)
        return trainer

    async def params(self, task: str, version: int, url: str, manifest: Manifest) -> list[Array]:
        """The parameters of ``version``, decoded and checked against the manifest."""
        key = f"params-{task}-{version}"
        body = await self._get(key, url, kind="params")
        try:
            return decode_params(body, manifest.params)
        except BundleError:
            self._cache.delete(key)
            body = await self._get(key, url, kind="params")
            return decode_params(body, manifest.params)

    async def _blob(self, digest: str) -> bytes:
        key = f"graph-{digest}"
        for _ in range(2):
            body = await self._get(key, f"/v1/artifacts/{digest}", kind="graph")
            if sha256_hex(body) == digest:
                return body
            logger.warning("artifact %s failed its sha256 check; fetching again", digest[:12])
            self._cache.delete(key)
        raise BundleError(f"artifact {digest} does not match its sha256 after two downloads")

    async def _get(self, key: str, path: str, *, kind: str) -> bytes:
        entry = self._cache.get(key)
        if entry is not None and entry.fresh(self._clock()):
            return entry.body
        token = await self._token()
        fetched = await self._api.fetch(path, token, entry.etag if entry else None)
        self.traffic.requests += 1
        if fetched.body is None:  # 304: our copy is current
            if entry is None:
                raise BundleError(f"{path}: server answered 304 to an unconditional request")
            self._cache.refresh(key, fetched.cache_control)
            return entry.body
        self._count(kind, len(fetched.body))
        self._cache.put(key, fetched.body, etag=fetched.etag, cache_control=fetched.cache_control)
        return fetched.body

    def _count(self, kind: str, n: int) -> None:
        if kind == "graph":
            self.traffic.graph_bytes += n
        else:
            self.traffic.param_bytes += n
