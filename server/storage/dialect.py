"""The one place that knows SQLite and PostgreSQL spell upserts differently."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert(dialect_name: str, table: sa.Table) -> Any:
    """An INSERT supporting ``on_conflict_do_nothing/do_update`` for the dialect."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {dialect_name}")
