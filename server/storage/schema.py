"""The relational schema (SQLAlchemy Core). Alembic migrations must produce exactly this.

Times are UNIX seconds (float) so SQLite and PostgreSQL store and compare them alike.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | paused
    sa.Column("mode", sa.String(8), nullable=False),  # async | sync
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("artifacts", sa.JSON, nullable=False),  # graph name -> sha256, manifest sha256
    sa.Column("eval_blob", sa.String(64), nullable=True),
    # The committed head: a commit moves it from v-1 to v, fenced by the leader's token.
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("params_blob", sa.String(64), nullable=True),
    # The aggregator's state right after this version; kept for the newest version of
    # each commit only (a group commit writes several): restoring reads the head's.
    sa.Column("snapshot_blob", sa.String(64), nullable=True),
    # Where the update queue stood when this version was cut: a local log sequence
    # number (embedded) or a Redis stream id (distributed).
    sa.Column("queue_position", sa.String(64), nullable=False),
    sa.Column("fence", sa.BigInteger, nullable=False),
    sa.Column("num_updates", sa.Integer, nullable=False),
    sa.Column("mean_staleness", sa.Float, nullable=True),
    sa.Column("metrics", sa.JSON, nullable=True),  # server-side evaluation
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("info", sa.JSON, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False),
)

updates = sa.Table(
    "updates",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # the session id: one update a session
    sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # accepted | applied | rejected
    sa.Column("reason", sa.String(64), nullable=True),
    sa.Column("base_version", sa.Integer, nullable=True),
    sa.Column("num_examples", sa.Integer, nullable=True),
    sa.Column("staleness", sa.Integer, nullable=True),
    sa.Column("weight", sa.Float, nullable=True),
    sa.Column("applied_version", sa.Integer, nullable=True),
    # What the update cost, as the device reported it (None: not reported); bytes_up is
    # the upload's body as the server read it. See server/fleet/cost.py.
    sa.Column("train_s", sa.Float, nullable=True),
    sa.Column("energy_j", sa.Float, nullable=True),
    sa.Column("bytes_up", sa.BigInteger, nullable=True),
    sa.Column("bytes_down", sa.BigInteger, nullable=True),
    sa.Index(None, "task_id", "status"),
    # the dashboard's incremental reads: by version committed; refusals by arrival time
    sa.Index(None, "task_id", "applied_version"),
    sa.Index(None, "task_id", "status", "created_at"),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
    # Federated evaluation: what one device measured on its own data for the version its
    # session was for. One row a session.
    sa.Column("id", sa.String(64), primary_key=True),  # the session id
    sa.Column("task_id", sa.String(64), sa.ForeignKey("tasks.id"), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("num_examples", sa.Integer, nullable=False),
    sa.Column("loss", sa.Float, nullable=False),
    sa.Column("accuracy", sa.Float, nullable=True),
    sa.Index(None, "task_id", "version"),
)

checkin_counts = sa.Table(
    "checkin_counts",
    metadata,
    # Check-ins by result per time bucket (UNIX seconds, a multiple of the bucket size);
    # every API process adds its own counts, so the rows hold the cluster's sums.
    sa.Column("task_id", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.BigInteger, primary_key=True),
    sa.Column("result", sa.String(32), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)
