"""check-in retractions and corrections, measurement retractions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:00:00.000000

Nothing committed is destroyed: a wrong check-in or measurement is retracted (marked,
with who, when and why) and the record leaves it out; a correction is a retraction plus
a new check-in at the same instant, linked both ways.

- `check_in`: `retracted_at`, `retracted_by_id` (a user) or `retracted_by_api_key_id`
  (a key), `retraction_reason`, `correction_of_id` / `corrected_by_id`, and
  `measurement_id`, the measurement a metric's check-in was made from. Check-ins that
  measurements made before this revision are linked to them where they match exactly
  (the key result's metric, instant, value, caller and the instant written).
- `measurement`: `retracted_at`, `retracted_by_id`, `retracted_by_api_key_id`,
  `retraction_reason`.
- `okr_check_in_read` (0007) reads the key result's latest check-in not retracted.

Downgrade drops the columns and restores 0007's function.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _function_0007() -> str:
    """0007's `okr_check_in_read`, as that revision wrote it (for the downgrade)."""
    path = Path(__file__).with_name("0007_lock_and_read_chain_functions.py")
    spec = importlib.util.spec_from_file_location("okr_migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.CHECK_IN_READ)


_LATEST_0007 = "WHERE c.key_result_id = p_key_result\n        ORDER BY"
_LATEST_0009 = "WHERE c.key_result_id = p_key_result AND c.retracted_at IS NULL\n        ORDER BY"

_LINK_MEASUREMENTS = """
UPDATE check_in c SET measurement_id = m.id
FROM key_result k, measurement m
WHERE k.id = c.key_result_id AND k.organization_id = c.organization_id
  AND m.metric_id = k.metric_id AND m.organization_id = c.organization_id
  AND m.measured_at = c.measured_at AND m.value = c.value AND m.caller = c.caller
  AND m.created_at = c.created_at AND c.idempotency_key IS NULL
  AND c.measurement_id IS NULL
"""


def _retraction_columns(table: str) -> None:
    op.add_column(table, sa.Column("retracted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(table, sa.Column("retracted_by_id", sa.BigInteger(), nullable=True))
    op.add_column(table, sa.Column("retracted_by_api_key_id", sa.BigInteger(), nullable=True))
    op.add_column(table, sa.Column("retraction_reason", sa.Text(), nullable=True))
    op.create_foreign_key(
        op.f(f"fk_{table}_retracted_by_id_app_user"),
        table,
        "app_user",
        ["retracted_by_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f(f"fk_{table}_retracted_by_api_key_id_api_key"),
        table,
        "api_key",
        ["retracted_by_api_key_id"],
        ["id"],
        ondelete="SET NULL",
    )


def upgrade() -> None:
    _retraction_columns("check_in")
    _retraction_columns("measurement")
    op.add_column("check_in", sa.Column("measurement_id", sa.BigInteger(), nullable=True))
    op.add_column("check_in", sa.Column("correction_of_id", sa.BigInteger(), nullable=True))
    op.add_column("check_in", sa.Column("corrected_by_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_check_in_measurement_id_measurement"),
        "check_in",
        "measurement",
        ["measurement_id"],
        ["id"],
        ondelete="SET NULL",
    )
    for column in ("correction_of_id", "corrected_by_id"):
        op.create_foreign_key(
            op.f(f"fk_check_in_{column}_check_in"),
            "check_in",
            "check_in",
            [column],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index("ix_check_in_measurement", "check_in", ["measurement_id"])
    op.create_check_constraint(
        op.f("ck_check_in_corrected_is_retracted"),
        "check_in",
        "corrected_by_id IS NULL OR retracted_at IS NOT NULL",
    )
    op.execute(_LINK_MEASUREMENTS)
    function = _function_0007()
    assert _LATEST_0007 in function
    op.execute(function.replace(_LATEST_0007, _LATEST_0009))


def downgrade() -> None:
    op.execute(_function_0007())
    op.drop_constraint(op.f("ck_check_in_corrected_is_retracted"), "check_in", type_="check")
    op.drop_index("ix_check_in_measurement", table_name="check_in")
    for column in ("corrected_by_id", "correction_of_id", "measurement_id"):
        op.drop_column("check_in", column)
    for table in ("measurement", "check_in"):
        for column in (
            "retraction_reason",
            "retracted_by_api_key_id",
            "retracted_by_id",
            "retracted_at",
        ):
            op.drop_column(table, column)
