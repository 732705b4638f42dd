"""external keys of objectives and key results (plans as files)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 20:40:00.000000

A plan file names its objectives and key results by a stable `key`, stored as
`external_key`: unique among an objective's cycle's objectives, and among a key
result's objective's key results (a plan's paths are `objectives/<key>` and
`objectives/<key>/keyResults/<key>`). Nullable: items made by hand have none.
Downgrade drops the columns and their indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("objective", sa.Column("external_key", sa.String(length=100), nullable=True))
    op.add_column("key_result", sa.Column("external_key", sa.String(length=100), nullable=True))
    op.create_index(
        "ux_objective_external_key",
        "objective",
        ["cycle_id", "external_key"],
        unique=True,
        postgresql_where=sa.text("external_key IS NOT NULL"),
    )
    op.create_index(
        "ux_key_result_external_key",
        "key_result",
        ["objective_id", "external_key"],
        unique=True,
        postgresql_where=sa.text("external_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_key_result_external_key", table_name="key_result")
    op.drop_index("ux_objective_external_key", table_name="objective")
    op.drop_column("key_result", "external_key")
    op.drop_column("objective", "external_key")
