"""jobs, webhook endpoints and deliveries, metric sources

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:40:00.000000

- `job`: work that happens later (service/jobs.py), taken under a lease; `job_schedule`
  the last slot each periodic job was queued for.
- `webhook_endpoint`, `webhook_delivery`: signed webhooks out (service/webhooks.py);
  secrets are stored encrypted.
- `metric_source`: where a metric pulls its value from (service/sources.py).
Nothing existing changes; downgrade drops the five tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    target_table = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column],
        [target],
        name=op.f(f"fk_{table}_{column}_{target_table}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "job",
        _id(),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="PENDING", nullable=False),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_by", sa.String(length=100), nullable=True),
        _ts("locked_until"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _created(),
        sa.CheckConstraint(
            "status IN ('PENDING', 'RUNNING', 'FAILED')", name=op.f("ck_job_status")
        ),
        _fk("job", "organization_id", "organization.id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index("ix_job_status_run_at", "job", ["status", "run_at"])
    op.create_table(
        "job_schedule",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("last_slot", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_schedule")),
    )
    op.create_table(
        "webhook_endpoint",
        _id(),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kinds", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("team_id", sa.BigInteger(), nullable=True),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("old_secret", sa.Text(), nullable=True),
        _ts("old_secret_until"),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        _ts("failing_since"),
        _created(),
        _fk("webhook_endpoint", "organization_id", "organization.id", "CASCADE"),
        _fk("webhook_endpoint", "team_id", "team.id", "RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
    )
    op.create_index(
        "ix_webhook_endpoint_organization", "webhook_endpoint", ["organization_id", "id"]
    )
    op.create_table(
        "webhook_delivery",
        _id(),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="PENDING", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        _ts("next_attempt_at"),
        _ts("last_attempt_at"),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=True),
        _created(),
        sa.CheckConstraint(
            "status IN ('PENDING', 'SUCCEEDED', 'RETRYING', 'FAILED')",
            name=op.f("ck_webhook_delivery_status"),
        ),
        _fk("webhook_delivery", "organization_id", "organization.id", "CASCADE"),
        _fk("webhook_delivery", "endpoint_id", "webhook_endpoint.id", "CASCADE"),
        _fk("webhook_delivery", "event_id", "event.id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
    )
    op.create_index("ix_webhook_delivery_endpoint", "webhook_delivery", ["endpoint_id", "id"])
    op.create_table(
        "metric_source",
        sa.Column("metric_id", sa.BigInteger(), nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        _ts("next_run_at", nullable=False),
        _ts("last_run_at"),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("failing", sa.Boolean(), server_default="false", nullable=False),
        _created(),
        sa.CheckConstraint(
            "kind IN ('PROMETHEUS', 'HTTP_JSON')", name=op.f("ck_metric_source_kind")
        ),
        sa.CheckConstraint("interval_seconds >= 60", name=op.f("ck_metric_source_interval")),
        _fk("metric_source", "metric_id", "metric.id", "CASCADE"),
        _fk("metric_source", "organization_id", "organization.id", "CASCADE"),
        sa.PrimaryKeyConstraint("metric_id", name=op.f("pk_metric_source")),
    )
    op.create_index("ix_metric_source_next_run", "metric_source", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("metric_source")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_endpoint")
    op.drop_table("job_schedule")
    op.drop_table("job")
