"""fleet and cost: the ledger's cost columns, federated evaluations, check-in counts

The operator dashboard reads per-tier and cost figures from durable data: each update's
training seconds, energy and bytes (nullable: older rows and devices that do not report
have none), each device's federated evaluation, and check-ins by result per time bucket.
Two indexes let it read the ledger incrementally (by version applied; refusals by
arrival time).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("updates") as batch:
        batch.add_column(sa.Column("train_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("energy_j", sa.Float(), nullable=True))
        batch.add_column(sa.Column("bytes_up", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("bytes_down", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_updates_task_id_applied_version"),
        "updates",
        ["task_id", "applied_version"],
        unique=False,
    )
    op.create_index(
        op.f("ix_updates_task_id_status_created_at"),
        "updates",
        ["task_id", "status", "created_at"],
        unique=False,
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("num_examples", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_evaluations_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    op.create_index(
        op.f("ix_evaluations_task_id_version"), "evaluations", ["task_id", "version"], unique=False
    )
    op.create_table(
        "checkin_counts",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "bucket", "result", name=op.f("pk_checkin_counts")),
    )


def downgrade() -> None:
    op.drop_table("checkin_counts")
    op.drop_index(op.f("ix_evaluations_task_id_version"), table_name="evaluations")
    op.drop_table("evaluations")
    op.drop_index(op.f("ix_updates_task_id_status_created_at"), table_name="updates")
    op.drop_index(op.f("ix_updates_task_id_applied_version"), table_name="updates")
    with op.batch_alter_table("updates") as batch:
        batch.drop_column("bytes_down")
        batch.drop_column("bytes_up")
        batch.drop_column("energy_j")
        batch.drop_column("train_s")
