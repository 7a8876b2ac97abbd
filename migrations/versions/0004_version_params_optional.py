"""model_versions.params_blob may be NULL

A commit of several versions publishes only the newest: the older ones are superseded
before any device can be handed them, so their parameters are not written. Every version
that was ever published keeps its parameters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("params_blob", existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    # A version without parameters has no value the old column would accept.
    bind = op.get_bind()
    missing = bind.execute(
        sa.text("SELECT COUNT(*) FROM model_versions WHERE params_blob IS NULL")
    ).scalar_one()
    if missing:
        raise RuntimeError(
            f"{missing} model versions have no parameters (superseded in their commit); "
            "cannot downgrade"
        )
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("params_blob", existing_type=sa.String(length=64), nullable=False)
