"""metrics and their measurements; key results bound to a metric

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 17:30:00.000000

A metric is a number another system owns (cost per order), unique by key in its
organization. Its measurements are kept as they come, each with its caller
('user:12', 'key:3') and an optional idempotency key unique per metric and caller.
A key result may be bound to one metric (`key_result.metric_id`): every measurement
then becomes a check-in on it. Nothing existing changes; downgrade drops all three.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "metric",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        _created(),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_metric_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric")),
        sa.UniqueConstraint("organization_id", "key", name="uq_metric_organization_key"),
    )
    op.create_table(
        "measurement",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("metric_id", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("caller", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        _created(),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f("fk_measurement_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["metric_id"],
            ["metric.id"],
            name=op.f("fk_measurement_metric_id_metric"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement")),
        sa.UniqueConstraint(
            "metric_id",
            "caller",
            "idempotency_key",
            name="uq_measurement_metric_caller_idempotency_key",
        ),
    )
    op.create_index(
        "ix_measurement_metric_measured", "measurement", ["metric_id", "measured_at", "id"]
    )
    op.add_column("key_result", sa.Column("metric_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_key_result_metric_id_metric"),
        "key_result",
        "metric",
        ["metric_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_key_result_metric", "key_result", ["metric_id"])


def downgrade() -> None:
    op.drop_index("ix_key_result_metric", table_name="key_result")
    op.drop_constraint(op.f("fk_key_result_metric_id_metric"), "key_result", type_="foreignkey")
    op.drop_column("key_result", "metric_id")
    op.drop_index("ix_measurement_metric_measured", table_name="measurement")
    op.drop_table("measurement")
    op.drop_table("metric")
