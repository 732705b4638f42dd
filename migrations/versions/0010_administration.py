"""administration: archived teams, key results and metrics; cycle versions; anonymized users

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:00:00.000000

- `team.archived_at`, `key_result.archived_at`, `metric.archived_at`: archived things
  leave lists but keep their history and can be read by id.
- `cycle.version`: `updateCycle` takes `expectedVersion`.
- `app_user.anonymized_at`: a person erased on request (name and email replaced).
- `okr_lock_chain` (migration 0007) reads a key result's archive mark, so an archived
  key result leaves its objective's roll-up, as an archived objective leaves its
  parent's.

Downgrade drops the columns and restores 0007's function.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ARCHIVED = ("team", "key_result", "metric")


def _lock_chain_0007() -> str:
    path = Path(__file__).with_name("0007_lock_and_read_chain_functions.py")
    spec = importlib.util.spec_from_file_location("okr_migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.LOCK_CHAIN)


_KR_NOT_ARCHIVED = "last_check_in_id IS NOT NULL AS checked_in, score, false AS archived"
_KR_ARCHIVED = (
    "last_check_in_id IS NOT NULL AS checked_in, score, archived_at IS NOT NULL AS archived"
)


def upgrade() -> None:
    for table in _ARCHIVED:
        op.add_column(table, sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "cycle", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.add_column("app_user", sa.Column("anonymized_at", sa.DateTime(timezone=True), nullable=True))
    original = _lock_chain_0007()
    assert _KR_NOT_ARCHIVED in original
    op.execute(original.replace(_KR_NOT_ARCHIVED, _KR_ARCHIVED))


def downgrade() -> None:
    op.execute(_lock_chain_0007())
    op.drop_column("app_user", "anonymized_at")
    op.drop_column("cycle", "version")
    for table in reversed(_ARCHIVED):
        op.drop_column(table, "archived_at")
