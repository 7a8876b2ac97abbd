"""model_versions.snapshot_blob may be NULL

A group commit writes several versions in one transaction and keeps the aggregator
snapshot of the newest only: restoring reads the head version's snapshot, never an
older one's.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 11:25:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("snapshot_blob", existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # A version without a snapshot has no value the old column would accept.
    bind = op.get_bind()
    missing = bind.execute(
        sa.text("SELECT COUNT(*) FROM model_versions WHERE snapshot_blob IS NULL")
    ).scalar_one()
    if missing:
        raise RuntimeError(
            f"{missing} model versions have no snapshot (group commits); cannot downgrade"
        )
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("snapshot_blob", existing_type=sa.String(length=64), nullable=False)
