"""The mask service: an HTTP API for the aggregation server, and nothing else.

Every call carries ``Authorization: Bearer <ASYNCFL_SECAGG_TOKEN>`` (the server's
credential for this service). Bodies are MessagePack.

- ``GET /v1/key``: ``{public_key, signature, min_threshold}`` (no credential needed);
- ``POST /v1/tasks/{t}/seeds`` ``{update_id, session_id, device_id, threshold,
  sealed}``: open the sealed seed for exactly this task, session and update and store it
  durably; 201, or 422 ``seed_refused``;
- ``POST /v1/tasks/{t}/releases`` ``{release_id, version, size, items: [[update_id,
  weight], ...]}`` -> ``{mask_sum}`` (a uint32 tensor, ``sum(weight * mask) mod
  2**32``); 409 ``release_below_threshold``, ``release_unknown_update``,
  ``release_overlap``; an optional ``noise_std`` (> 0, in fixed-point units) makes the
  service subtract rounded Gaussian noise of that std (:mod:`.noise`), never less than the
  largest std the task asked for since the service started;
- ``POST /v1/tasks/{t}/releases/{r}/commit``: the version that used release ``r`` is
  committed, its seeds are deleted; 204;
- ``GET /healthz``.

It never sees an update, masked or not; it sees seeds, and releases sums of masks only
for buffers of at least the threshold of updates from distinct devices, each update in
at most one release.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from client_sdk.secagg import SealedSeed, SecaggError, expand_mask, open_seed, seed_context
from client_sdk.wire import encode_tensor
from server.api.http import parse_body, respond
from server.api.middleware import error_middleware
from server.errors import BadRequest, Unauthorized, UpdateRejected
from server.secagg.keys import MaskKeys
from server.secagg.noise import noise_key, rounded_gaussian, subtract_noise
from server.secagg.store import Item, SeedStore
from server.storage.database import create_engine

logger = logging.getLogger(__name__)

BODY_LIMIT = 16 * 1024 * 1024
MAX_SIZE = 1 << 28  # parameters a release may cover
MAX_ITEMS = 100_000


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    token: str
    database_url: str = ""  # empty: SQLite under data_dir
    min_threshold: int = 2

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'secagg.db').resolve()}"


@dataclass
class MaskService:
    keys: MaskKeys
    store: SeedStore
    config: ServiceConfig
    # per task, the largest noise std asked for (in memory: see the README's Privacy notes)
    noise_floor: dict[str, float] = field(default_factory=dict)

    def noise_secret(self) -> bytes:
        return self.keys.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


SERVICE = web.AppKey("mask_service", MaskService)


def create_app(config: ServiceConfig) -> web.Application:
    if not config.token:
        raise BadRequest("the mask service needs a token (ASYNCFL_SECAGG_TOKEN)")
    app = web.Application(client_max_size=BODY_LIMIT, middlewares=[error_middleware()])
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/v1/key", public_key),
            web.post("/v1/tasks/{task}/seeds", register_seed),
            web.post("/v1/tasks/{task}/releases", release),
            web.post("/v1/tasks/{task}/releases/{release}/commit", commit),
        ]
    )
    app.cleanup_ctx.append(_lifecycle(config))
    return app


def _lifecycle(config: ServiceConfig) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(config.effective_database_url)
        store = SeedStore(engine, min_threshold=config.min_threshold)
        await store.create()
        keys = await asyncio.to_thread(MaskKeys.load_or_create, config.data_dir)
        app[SERVICE] = MaskService(keys, store, config)
        logger.info("mask service ready; public key %s", keys.public.hex())
        try:
            yield
        finally:
            await engine.dispose()

    return ctx


def _service(request: web.Request) -> MaskService:
    service = request.app[SERVICE]
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(token.encode(), service.config.token.encode()):
        raise Unauthorized("mask service token missing or wrong", code="invalid_admin_token")
    return service


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def public_key(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return respond(
        request,
        {
            "public_key": service.keys.public,
            "signature": service.keys.signature,
            "min_threshold": service.config.min_threshold,
        },
        msgpack_default=True,
    )


def _str(body: dict[str, Any], name: str, limit: int = 64) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise BadRequest(f"{name} must be a string of 1..{limit} characters", code="bad_field")
    return value


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer in {low}..{high}", code="bad_field")
    return value


async def register_seed(request: web.Request) -> web.Response:
    service = _service(request)
    task = request.match_info["task"]
    body = await parse_body(request, 64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest("body must be a map", code="malformed_body")
    update_id = _str(body, "update_id")
    session_id = _str(body, "session_id")
    device_id = _str(body, "device_id")
    asked = _int(body, "threshold", 1, MAX_ITEMS)
    try:
        sealed = SealedSeed.from_wire(body.get("sealed"))
        seed = open_seed(service.keys.private, sealed, seed_context(task, session_id, update_id))
    except SecaggError as exc:
        raise UpdateRejected(f"sealed seed refused: {exc}", code="seed_refused") from exc
    await service.store.threshold(task, asked)
    digest = hashlib.sha256(sealed.ephemeral_key + sealed.nonce + sealed.ciphertext).hexdigest()
    await service.store.register(task, update_id, device_id, seed, digest)
    return respond(request, {"accepted": True}, status=201, msgpack_default=True)


async def release(request: web.Request) -> web.Response:
    service = _service(request)
    task = request.match_info["task"]
    body = await parse_body(request, BODY_LIMIT)
    if not isinstance(body, dict):
        raise BadRequest("body must be a map", code="malformed_body")
    release_id = _str(body, "release_id")
    version = _int(body, "version", 1, 2**31 - 1)
    size = _int(body, "size", 1, MAX_SIZE)
    raw = body.get("items")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ITEMS:
        raise BadRequest(f"items must be a list of 1..{MAX_ITEMS} pairs", code="bad_field")
    items = []
    for pair in raw:
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or isinstance(pair[1], bool)
            or not isinstance(pair[1], int)
            or not 1 <= pair[1] < 2**32
        ):
            raise BadRequest("each item is [update_id, weight 1..2**32-1]", code="bad_field")
        items.append(Item(pair[0], pair[1]))
    std = _noise_std(service, task, body.get("noise_std"))
    seeds = await service.store.claim_release(task, release_id, version, items)
    mask_sum = await asyncio.to_thread(sum_masks, items, seeds, size)
    if std > 0:
        key = noise_key(service.noise_secret(), task, release_id, std)
        noise = await asyncio.to_thread(rounded_gaussian, key, size, std)
        subtract_noise(mask_sum, noise)
    return respond(request, {"mask_sum": encode_tensor(mask_sum)}, msgpack_default=True)


def _noise_std(service: MaskService, task: str, asked: Any) -> float:
    if asked is None:
        asked = 0.0
    if isinstance(asked, bool) or not isinstance(asked, int | float) or not 0 <= asked < 2**31:
        raise BadRequest("noise_std must be a number in [0, 2**31)", code="bad_field")
    std = max(float(asked), service.noise_floor.get(task, 0.0))
    if std > 0:
        service.noise_floor[task] = std
    return std


def sum_masks(items: list[Item], seeds: dict[str, bytes], size: int) -> np.ndarray[Any, Any]:
    """``sum(weight_i * mask_i) mod 2**32`` over the items (uint32 arithmetic wraps)."""
    total = np.zeros(size, dtype=np.uint32)
    scratch = np.empty(size, dtype=np.uint32)
    for item in items:
        np.multiply(expand_mask(seeds[item.update_id], size), np.uint32(item.weight), out=scratch)
        np.add(total, scratch, out=total)
    return total


async def commit(request: web.Request) -> web.Response:
    service = _service(request)
    deleted = await service.store.forget(request.match_info["task"], request.match_info["release"])
    logger.debug("release %s committed: %d seed(s) deleted", request.match_info["release"], deleted)
    return web.Response(status=204)
