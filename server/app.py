"""``create_app(settings)``: the aiohttp application and the lifecycle of its resources.

Every resource is created in one ``cleanup_ctx`` generator and torn down in reverse.
Shutdown drains: aiohttp stops accepting connections, ``on_shutdown`` makes new
requests answer 503, in-flight uploads finish (aiohttp waits for them), then pending
version commits finish, the ledger is flushed and background tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from server.api import admin, device, ops
from server.api.middleware import error_middleware, metrics_middleware
from server.coordination.locallog import LocalLogQueue
from server.coordination.ratelimit import LocalRateLimiter
from server.coordination.sessions import InProcessSessionStore
from server.coordination.tokens import TokenSigner
from server.metrics import Metrics
from server.services import METRICS, SERVICES, Services
from server.settings import Settings
from server.storage.blobs import LocalBlobStore
from server.storage.database import create_engine, ensure_schema
from server.storage.devices import DeviceRepository
from server.storage.ledger import LedgerRepository
from server.storage.tasks import TaskRepository
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.manager import TaskManager

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    settings = settings.with_secrets()
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware(metrics), error_middleware()],
    )
    app[METRICS] = metrics
    app.add_routes(device.routes() + admin.routes() + ops.routes())
    app.cleanup_ctx.append(_services_ctx(settings, metrics))
    app.on_shutdown.append(_stop_admitting)
    return app


def _services_ctx(settings: Settings, metrics: Metrics):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.effective_database_url)
        try:
            await ensure_schema(
                engine, settings.migrations_dir, auto_migrate=settings.should_auto_migrate
            )
            blobs = LocalBlobStore(settings.blob_dir)
            queue = LocalLogQueue(
                settings.log_dir, fsync=settings.log_fsync, segment_bytes=settings.log_segment_bytes
            )
            sessions = InProcessSessionStore()
            ledger = LedgerRepository(engine)
            ledger_writer = LedgerWriter(ledger)
            manager = TaskManager(
                repo=TaskRepository(engine),
                ledger=ledger,
                blobs=blobs,
                queue=queue,
                sessions=sessions,
                ledger_writer=ledger_writer,
                exports_dir=settings.effective_exports_dir,
                eval_threads=settings.eval_threads,
                on_fold=lambda task, result, s: metrics.fold_seconds.labels(task).observe(s),
                on_commit=lambda task, job, s: metrics.commit_seconds.labels(task).observe(s),
            )
            devices = DeviceRepository(engine)
            services = Services(
                settings=settings,
                engine=engine,
                signer=TokenSigner(settings.secret_key),
                sessions=sessions,
                rate_limiter=LocalRateLimiter(
                    settings.device_rate_per_s, settings.device_rate_burst
                ),
                queue=queue,
                blobs=blobs,
                devices=devices,
                manager=manager,
                ledger_writer=ledger_writer,
                metrics=metrics,
                revoked=await devices.revoked_ids(),
            )
            app[SERVICES] = services
            writer_task = asyncio.create_task(ledger_writer.run(), name="ledger-writer")
            await manager.load_all()
            services.ready = True
            logger.info(
                "asyncfl ready: %d task(s), data in %s", len(manager.runtimes), settings.data_dir
            )
            try:
                yield
            finally:
                services.draining = True
                await manager.drain()
                await manager.stop()
                writer_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer_task
                with contextlib.suppress(Exception):
                    await ledger_writer.flush()
                await queue.close()
        finally:
            await engine.dispose()

    return ctx


async def _stop_admitting(app: web.Application) -> None:
    services = app.get(SERVICES)
    if services is not None:
        services.draining = True
        logger.info("draining: %d upload(s) in flight", services.inflight_uploads)
