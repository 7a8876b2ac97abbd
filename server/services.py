"""Everything a handler may use, built once per application in ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.coordination.partials import RedisPartialQueue
from server.coordination.ratelimit import RateLimiter
from server.coordination.rounds import RedisRounds
from server.coordination.sessions import SessionStore
from server.coordination.tokens import TokenSigner
from server.ingest.upload import Ingest
from server.metrics import Metrics
from server.monitor.service import Monitor
from server.monitor.snapshots import LiveHub
from server.privacy.participation import InProcessParticipation, Participation
from server.secagg.provider import MaskServiceProvider
from server.settings import Settings
from server.storage.blobs import LocalBlobStore
from server.storage.devices import DeviceRepository
from server.tasks.leadership import Leadership
from server.tasks.ledgerwriter import LedgerWriter
from server.tasks.manager import TaskManager


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    signer: TokenSigner
    sessions: SessionStore
    rate_limiter: RateLimiter
    partials: RedisPartialQueue | None  # distributed mode: the partial streams
    rounds: RedisRounds | None  # distributed mode: the shared sync rounds
    secagg: MaskServiceProvider  # the mask service (secure aggregation)
    blobs: LocalBlobStore
    devices: DeviceRepository
    manager: TaskManager
    ledger_writer: LedgerWriter
    metrics: Metrics
    ingest: Ingest
    leadership: Leadership | None = None  # set where this process aggregates
    redis: Redis | None = None  # set in distributed mode
    monitor: Monitor | None = None  # fleet figures (API processes)
    live: LiveHub | None = None  # the dashboard's live snapshots (API processes)
    participation: Participation = field(default_factory=InProcessParticipation)  # DP limits
    ready: bool = False
    draining: bool = False


SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
