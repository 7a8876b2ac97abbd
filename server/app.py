"""``create_app(settings)``: the aiohttp application and the lifecycle of its resources.

Roles (``ASYNCFL_ROLE``; ``auto`` picks ``all`` embedded and ``api`` with Redis):

- ``all``: device and admin API plus aggregation, in one process (the embedded default:
  SQLite, checkpoints of each task's folded buffer, in-process sessions);
- ``api``: a stateless replica (Redis sessions and rate limits; it pre-aggregates what
  it accepts and ships partial sums through a Redis stream per task);
- ``aggregator``: leads tasks under Redis leases; serves only ``/healthz``, ``/readyz``
  and ``/metrics``.

Every resource is created in one ``cleanup_ctx`` generator and torn down in reverse.
Shutdown drains: aiohttp stops accepting connections, ``on_shutdown`` makes new requests
answer 503, in-flight requests finish (their group commits or partials included), open
partials are shipped, pending version commits finish, the ledger is flushed, then
background tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import ProcessCollector
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.api import admin, dashboard, device, fleet, live, ops, sessions
from server.api.middleware import error_middleware, metrics_middleware
from server.coordination.events import EventBus, LocalEvents, RedisEvents
from server.coordination.keys import Keys
from server.coordination.leases import InProcessLeases, Leases, RedisLeases
from server.coordination.locallog import AuditLog
from server.coordination.partials import RedisPartialQueue
from server.coordination.ratelimit import LocalRateLimiter, RateLimiter
from server.coordination.redis_ratelimit import RedisRateLimiter
from server.coordination.redis_sessions import RedisSessionStore
from server.coordination.redisconn import connect
from server.coordination.rounds import RedisRounds
from server.coordination.sessions import InProcessSessionStore, SessionStore
from server.coordination.tokens import TokenSigner
from server.heap import HeapCollector, trim_every
from server.ingest.partials import ReplicaPartials
from server.ingest.upload import Ingest
from server.metrics import Metrics
from server.monitor.collector import FleetCollector, LiveCollector
from server.monitor.service import Monitor
from server.monitor.snapshots import LiveHub
from server.privacy.participation import InProcessParticipation, Participation, RedisParticipation
from server.secagg.client import ProvidedReleases
from server.secagg.provider import MaskServiceProvider
from server.services import METRICS, SERVICES, Services
from server.settings import Settings
from server.storage.blobs import LocalBlobStore
from server.storage.database import create_engine, ensure_schema
from server.storage.devices import DeviceRepository
from server.storage.fleet import FleetRepository
from server.storage.ledger import LedgerRepository
from server.storage.reader import FleetReader
from server.storage.tasks import TaskRepository
from server.tasks.leadership import AggregatorRegistry, Leadership
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.manager import TaskManager
from server.tasks.replication import StateSync

logger = logging.getLogger(__name__)

EMBEDDED_LEASE_S = 3600.0  # one process leads every task; renewed each tick anyway


def create_app(settings: Settings) -> web.Application:
    settings = settings.with_secrets()
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware(metrics), error_middleware()],
    )
    app[METRICS] = metrics
    routes = ops.routes()
    if settings.effective_role != "aggregator":
        routes = device.routes() + sessions.routes() + admin.routes() + routes
        routes += fleet.routes() + live.routes() + dashboard.routes()
    app.add_routes(routes)
    app.cleanup_ctx.append(_services_ctx(settings, metrics))
    app.on_shutdown.append(_stop_admitting)
    return app


@dataclass
class Coordination:
    sessions: SessionStore
    rate_limiter: RateLimiter
    partials: RedisPartialQueue | None
    rounds: RedisRounds | None
    events: EventBus
    leases: Leases
    registry: AggregatorRegistry | None
    redis: Redis | None
    participation: Participation = field(default_factory=InProcessParticipation)


def coordination(settings: Settings) -> Coordination:
    """Embedded: in-process sessions, checkpoints. Distributed: all of it in Redis."""
    node = settings.effective_node_id
    if not settings.distributed:
        return Coordination(
            sessions=InProcessSessionStore(),
            rate_limiter=LocalRateLimiter(settings.device_rate_per_s, settings.device_rate_burst),
            partials=None,
            rounds=None,
            events=LocalEvents(),
            leases=InProcessLeases(node, EMBEDDED_LEASE_S),
            registry=None,
            redis=None,
        )
    redis = connect(settings.redis_url)
    keys = Keys(settings.redis_namespace)
    return Coordination(
        sessions=RedisSessionStore(redis, keys),
        rate_limiter=RedisRateLimiter(
            redis, keys, settings.device_rate_per_s, settings.device_rate_burst
        ),
        partials=RedisPartialQueue(redis, keys),
        rounds=RedisRounds(redis, keys),
        events=RedisEvents(redis, keys),
        leases=RedisLeases(redis, keys, node, settings.lease_ttl_s),
        registry=AggregatorRegistry(redis, keys, node, settings.lease_ttl_s),
        redis=redis,
        participation=RedisParticipation(redis, keys),
    )


def _dp_noise(manager: TaskManager, task_id: str, size: int) -> float:
    """The noise std a DP task with secure aggregation asks of the mask service."""
    config = manager.get(task_id).state.config
    secure = config.secure_aggregation
    return 0.0 if secure is None else secure.noise_std(config.aggregation, size)


def _services_ctx(
    settings: Settings, metrics: Metrics
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.effective_database_url)
        coord: Coordination | None = None
        audit: AuditLog | None = None
        partials: ReplicaPartials | None = None
        reader: FleetReader | None = None
        secagg = MaskServiceProvider(
            url=settings.secagg_url,
            token=settings.secagg_token,
            child_dir=None if settings.distributed else settings.data_dir / "secagg",
        )
        try:
            await ensure_schema(
                engine, settings.migrations_dir, auto_migrate=settings.should_auto_migrate
            )
            coord = coordination(settings)
            ledger = LedgerRepository(engine)
            ledger_writer = LedgerWriter(
                ledger,
                quarantine=settings.log_dir / "ledger-quarantine.jsonl",
                on_quarantine=lambda e: metrics.ledger_quarantined.labels(e.task_id).inc(),
            )
            manager = TaskManager(
                repo=TaskRepository(engine),
                ledger=ledger,
                blobs=LocalBlobStore(settings.effective_blob_dir),
                partials=coord.partials,
                rounds=coord.rounds,
                checkpoints_dir=settings.checkpoints_dir,
                checkpoint_fsync=settings.log_fsync,
                sessions=coord.sessions,
                events=coord.events,
                ledger_writer=ledger_writer,
                exports_dir=settings.effective_exports_dir,
                eval_threads=settings.eval_threads,
                group_interval_s=settings.group_commit_ms / 1000,
                commit_interval_s=settings.version_commit_ms / 1000,
                on_fold=lambda task, result, s: metrics.task(task).fold_seconds.observe(s),
                on_commit=lambda task, job, s: metrics.commit_seconds.labels(task).observe(s),
                on_stale_commit=lambda task: metrics.stale_commits.labels(task).inc(),
                on_group=lambda task, n, s: metrics.group_commit(task, n, s),
                on_quarantine=lambda task, n: metrics.quarantined.labels(task).inc(n),
                releases=ProvidedReleases(
                    secagg, lambda task, size: _dp_noise(manager, task, size)
                ),
            )
            if settings.audit_log:
                audit = AuditLog(
                    settings.log_dir,
                    fsync=settings.log_fsync,
                    segment_bytes=settings.log_segment_bytes,
                )
            if coord.partials is not None and settings.effective_role != "aggregator":
                partials = ReplicaPartials(
                    coord.partials,
                    settings.effective_node_id,
                    interval_s=settings.group_commit_ms / 1000,
                    on_ship=lambda task, n, b, s: metrics.partial_shipped(task, n, b, s),
                )
            aggregates = settings.effective_role in ("all", "aggregator")
            leadership = None
            if aggregates:
                leadership = Leadership(
                    manager,
                    coord.leases,
                    registry=coord.registry,
                    interval_s=min(1.0, settings.lease_ttl_s / 5),
                )
            devices = DeviceRepository(engine)
            signer = TokenSigner(settings.secret_key)
            await coord.sessions.load_revoked(await devices.revoked_ids())
            services = Services(
                settings=settings,
                engine=engine,
                signer=signer,
                sessions=coord.sessions,
                rate_limiter=coord.rate_limiter,
                partials=coord.partials,
                rounds=coord.rounds,
                secagg=secagg,
                blobs=manager.blobs,
                devices=devices,
                manager=manager,
                ledger_writer=ledger_writer,
                metrics=metrics,
                ingest=Ingest(
                    signer=signer,
                    sessions=coord.sessions,
                    manager=manager,
                    metrics=metrics,
                    ledger_writer=ledger_writer,
                    partials=partials,
                    rounds=coord.rounds,
                    secagg=secagg,
                    audit=audit,
                ),
                leadership=leadership,
                redis=coord.redis,
                participation=coord.participation,
            )
            app[SERVICES] = services
            await manager.load_all()
            sync = StateSync(manager, coord.events)
            loops: list[Callable[[], Awaitable[None]]] = [ledger_writer.run, sync.poll]
            if settings.effective_role != "aggregator":
                reader = FleetReader(settings.effective_database_url).start()
                services.monitor = _monitor(settings, engine, manager, metrics, reader)
                services.live = LiveHub(services.monitor, manager, live.summarizer(services))
                hub = services.live
                metrics.registry.register(LiveCollector(hub))
                loops += [
                    services.monitor.run,
                    hub.run,
                    functools.partial(hub.listen, coord.events),
                ]
            if settings.distributed:
                loops.append(sync.listen)
            if leadership is not None:
                await leadership.tick()  # embedded: lead (and replay) before ready
                loops.append(leadership.run)
            if settings.heap_trim_s > 0:
                loops.append(functools.partial(trim_every, settings.heap_trim_s))
            background = [asyncio.create_task(_forever(loop)) for loop in loops]
            services.ready = True
            logger.info(
                "asyncfl ready (%s, %s): %d task(s)",
                settings.effective_role,
                "redis" if settings.distributed else "embedded",
                len(manager.runtimes),
            )
            try:
                yield
            finally:
                services.draining = True
                for task in background:
                    task.cancel()
                for task in background:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if partials is not None:
                    await partials.close()
                await manager.drain()
                if leadership is not None:
                    with contextlib.suppress(Exception):
                        await leadership.step_down()
                await manager.stop()
                with contextlib.suppress(Exception):
                    await ledger_writer.flush()
                if services.monitor is not None:
                    try:
                        await services.monitor.tick(refresh=False)
                    except Exception as exc:
                        logger.warning("monitor: final flush failed: %s", exc)
        finally:
            if reader is not None:
                await reader.close()
            await secagg.close()
            if audit is not None:
                await audit.close()
            if coord is not None and coord.redis is not None:
                await coord.redis.aclose()
            await engine.dispose()

    return ctx


def _monitor(
    settings: Settings,
    engine: AsyncEngine,
    manager: TaskManager,
    metrics: Metrics,
    reader: FleetReader,
) -> Monitor:
    """The fleet figures of this API process, exported on ``/metrics`` too."""
    monitor = Monitor(
        FleetRepository(engine),
        manager,
        metrics,
        settings.cost_model,
        refresh_s=settings.fleet_refresh_s,
        reader=reader,
        local=not settings.distributed,
    )
    metrics.registry.register(FleetCollector(monitor))
    ProcessCollector(registry=metrics.registry)
    metrics.registry.register(HeapCollector())
    return monitor


async def _forever(loop: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop for the life of the app; a crash is logged and the loop
    restarted (a dead leadership or sync loop would silently stop the task)."""
    name = getattr(loop, "__qualname__", repr(loop))
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background loop %s crashed; restarting in 1s", name)
            await asyncio.sleep(1.0)


async def _stop_admitting(app: web.Application) -> None:
    services = app.get(SERVICES)
    if services is not None:
        services.draining = True
        if services.live is not None:
            services.live.close()  # streams end; aiohttp then waits for no handler
        logger.info("draining: %d upload(s) in flight", services.ingest.inflight)
