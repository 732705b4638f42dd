"""API keys limited to teams

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00.000000

`api_key.team_limited` and `api_key_team`: a key made with `okr apikey create --team`
reads and writes only what a member of those teams could (docs/design.md, "Access").
Existing keys stay unlimited.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "api_key",
        sa.Column("team_limited", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "api_key_team",
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("api_key_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_api_key_team_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_key.id"],
            name=op.f("fk_api_key_team_api_key_id_api_key"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["team.id"],
            name=op.f("fk_api_key_team_team_id_team"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", "team_id", name=op.f("pk_api_key_team")),
    )


def downgrade() -> None:
    op.drop_table("api_key_team")
    op.drop_column("api_key", "team_limited")
