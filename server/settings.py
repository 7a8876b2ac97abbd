"""Server configuration: one frozen, typed object built in one place.

``Settings.from_env()`` reads ``ASYNCFL_*`` variables (and, if ``ASYNCFL_CONFIG`` names a
TOML file, that file first; variables win). Nothing else in the server reads
``os.environ``. Secrets that are not given are generated once and kept in
``<data_dir>/secrets.json`` so that a zero-config server keeps its tokens across restarts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from server.errors import ConfigError
from server.fleet.cost import (
    DEFAULT_GRID_G_PER_KWH,
    DEFAULT_POWER_TABLE,
    DEFAULT_POWER_W,
    CostModel,
    PowerTableError,
    parse_power_table,
)

LogFsync = Literal["always", "interval", "never"]
Role = Literal["auto", "all", "api", "aggregator"]
LogFormat = Literal["text", "json"]

ENV_PREFIX = "ASYNCFL_"


@dataclass(frozen=True)
class Settings:
    """Everything the server can be configured with (see the README's table)."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".asyncfl")
    database_url: str = ""  # empty: SQLite file under data_dir
    redis_url: str = ""  # empty: embedded (in-process) coordination
    redis_namespace: str = "afl"  # prefix of every Redis key
    role: Role = "auto"  # auto: "all" when embedded, "api" with Redis
    node_id: str = ""  # names this process in leases; default host:pid
    lease_ttl_s: float = 5.0  # an aggregator's task lease; failover takes about this
    blob_dir: Path | None = None  # default <data_dir>/blobs; shared by replicas
    admin_token: str = ""
    enrollment_key: str = ""
    secret_key: str = ""  # signs session and device tokens
    auto_migrate: bool | None = None  # None: yes for SQLite, no otherwise
    session_deadline_s: float = 240.0
    max_body_bytes: int = 64 * 1024 * 1024
    device_rate_per_s: float = 5.0
    device_rate_burst: int = 20
    log_fsync: LogFsync = "always"  # checkpoints (and the audit log): when is a write durable
    group_commit_ms: float = 5.0  # how long an ingest group gathers before it is written
    version_commit_ms: float = 50.0  # embedded: versions reach the database at most this often
    audit_log: bool = False  # also append every accepted body to a local log
    secagg_url: str = ""  # the mask service (empty: embedded starts its own when needed)
    secagg_token: str = ""  # the server's credential at the mask service
    malloc_tuning: bool = True  # keep freed upload bodies in the heap (glibc mallopt)
    heap_trim_s: float = 60.0  # hand the heap's free pages back to the OS this often (0: never)
    log_segment_bytes: int = 64 * 1024 * 1024
    eval_threads: int = 1
    shutdown_timeout_s: float = 30.0
    log_format: LogFormat = "text"
    exports_dir: Path | None = None  # cache of zoo model exports; default <data_dir>/exports
    # cost of training (server/fleet/cost.py): watts per device tier, for tiers not in the
    # table, and the grid's carbon intensity
    tier_power_w: str = DEFAULT_POWER_TABLE
    default_power_w: float = DEFAULT_POWER_W
    grid_g_co2e_per_kwh: float = DEFAULT_GRID_G_PER_KWH
    fleet_refresh_s: float = 15.0  # how often /metrics' fleet figures are re-read
    migrations_dir: Path = field(
        default_factory=lambda: Path(__file__).resolve().parent.parent / "migrations"
    )

    # -- derived -----------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'asyncfl.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def effective_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def distributed(self) -> bool:
        return bool(self.redis_url)

    @property
    def effective_role(self) -> str:
        if self.role != "auto":
            return self.role
        return "api" if self.distributed else "all"

    @property
    def effective_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def effective_exports_dir(self) -> Path:
        return self.exports_dir or self.data_dir / "exports"

    @property
    def cost_model(self) -> CostModel:
        return CostModel(
            parse_power_table(self.tier_power_w), self.default_power_w, self.grid_g_co2e_per_kwh
        )

    # -- construction --------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from a TOML file (``ASYNCFL_CONFIG``), env vars, then overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        config_file = env.get(ENV_PREFIX + "CONFIG")
        if config_file:
            try:
                values.update(tomllib.loads(Path(config_file).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        names = {f.name for f in dataclasses.fields(cls)}
        for name in names:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - names
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**{k: _coerce(k, v) for k, v in values.items()})

    def with_secrets(self) -> Settings:
        """Fill missing secrets from ``<data_dir>/secrets.json``, creating it if needed.

        Distributed replicas must share their secrets, so there they must be given."""
        wanted = ("admin_token", "enrollment_key", "secret_key")
        if all(getattr(self, name) for name in wanted):
            return self
        if self.distributed:
            missing = [f"ASYNCFL_{n.upper()}" for n in wanted if not getattr(self, n)]
            raise ConfigError(
                f"distributed mode needs the shared secrets set: {', '.join(missing)}"
            )
        path = self.data_dir / "secrets.json"
        stored: dict[str, str] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
        changed = False
        for name in (*wanted, "secagg_token"):
            if not stored.get(name):
                stored[name] = secrets.token_urlsafe(32)
                changed = True
        if changed:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(stored, indent=2))
            tmp.chmod(0o600)
            tmp.replace(path)
        return dataclasses.replace(
            self,
            admin_token=self.admin_token or stored["admin_token"],
            enrollment_key=self.enrollment_key or stored["enrollment_key"],
            secret_key=self.secret_key or stored["secret_key"],
            secagg_token=self.secagg_token or stored.get("secagg_token", ""),
        )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.session_deadline_s <= 0:
            raise ConfigError("session_deadline_s must be > 0")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes must be >= 1024")
        if self.fleet_refresh_s <= 0:
            raise ConfigError("fleet_refresh_s must be > 0")
        if self.lease_ttl_s <= 0:
            raise ConfigError("lease_ttl_s must be > 0")
        if not 0 <= self.heap_trim_s <= 86400:
            raise ConfigError("heap_trim_s must be in 0..86400 (0: never)")
        if self.role == "aggregator" and not self.redis_url:
            raise ConfigError("the aggregator role needs ASYNCFL_REDIS_URL (distributed mode)")
        if not 0 <= self.group_commit_ms <= 1000:
            raise ConfigError("group_commit_ms must be in 0..1000")
        if not 0 <= self.version_commit_ms <= 10_000:
            raise ConfigError("version_commit_ms must be in 0..10000")
        if self.device_rate_per_s <= 0 or self.device_rate_burst < 1:
            raise ConfigError("device_rate_per_s must be > 0 and device_rate_burst >= 1")
        try:
            self.cost_model  # noqa: B018 - validates the power table and grid intensity
        except PowerTableError as exc:
            raise ConfigError(f"cost settings: {exc}") from exc
        for name, kind in (("log_fsync", LogFsync), ("role", Role), ("log_format", LogFormat)):
            if getattr(self, name) not in get_args(kind):
                raise ConfigError(f"{name} must be one of {get_args(kind)}")

    def public_dict(self) -> dict[str, Any]:
        """Settings without secrets, for logs and the admin API."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("admin_token", "enrollment_key", "secret_key", "secagg_token"):
            out[name] = "***" if out[name] else ""
        out["database_url"] = _redact_url(self.effective_database_url)
        out["redis_url"] = _redact_url(self.redis_url)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}


def _redact_url(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = str(_FIELD_TYPES[name])
    if not isinstance(value, str):
        return Path(value) if "Path" in kind and not isinstance(value, Path) else value
    try:
        if "Path" in kind:
            return Path(value)
        if kind.startswith("bool"):
            lowered = value.strip().lower()
            if lowered in {"", "auto"} and "None" in kind:
                return None
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc
    return value
