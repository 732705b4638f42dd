"""idempotency keys per key result and caller; objectives owned by their creator

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 16:50:00.000000

Every check-in now records its caller as one non-null value ('user:12', 'key:3'), and
idempotency keys are unique per key result and caller, so a user and an API key never
share a scope (a NULL in a unique key would let them). Existing rows are backfilled
from their author or API key; a row with neither (its user or key deleted since) gets
a caller of its own, so it can collide with nothing.

Objectives created without an owner are owned by their creator from now on. PRIVATE
ones created before without an owner were visible to admins only: their creator (the
actor of their OBJECTIVE_CREATED event, where that user still exists) becomes their
owner, so they see their own objective again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "uq_check_in_key_result_idempotency_key"
NEW = "uq_check_in_key_result_caller_idempotency_key"


def upgrade() -> None:
    op.add_column("check_in", sa.Column("caller", sa.String(length=40), nullable=True))
    op.execute(
        """
        UPDATE check_in SET caller = CASE
            WHEN author_id IS NOT NULL THEN 'user:' || author_id
            WHEN api_key_id IS NOT NULL THEN 'key:' || api_key_id
            ELSE 'check-in:' || id
        END
        """
    )
    op.alter_column("check_in", "caller", existing_type=sa.String(length=40), nullable=False)
    op.drop_constraint(OLD, "check_in", type_="unique")
    op.create_unique_constraint(NEW, "check_in", ["key_result_id", "caller", "idempotency_key"])
    op.execute(
        """
        UPDATE objective o SET owner_id = e.actor_user_id
        FROM event e JOIN app_user u ON u.id = e.actor_user_id
        WHERE o.owner_id IS NULL AND o.visibility = 'PRIVATE'
          AND e.organization_id = o.organization_id AND u.organization_id = o.organization_id
          AND e.kind = 'OBJECTIVE_CREATED' AND e.subject_type = 'Objective'
          AND e.subject_id = o.id
        """
    )


def downgrade() -> None:
    op.drop_constraint(NEW, "check_in", type_="unique")
    # Two callers may now share a key on one key result: the older scope allows one.
    op.execute(
        """
        UPDATE check_in c SET idempotency_key = NULL
        WHERE c.idempotency_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM check_in f
            WHERE f.key_result_id = c.key_result_id AND f.idempotency_key = c.idempotency_key
              AND f.id < c.id
        )
        """
    )
    op.create_unique_constraint(OLD, "check_in", ["key_result_id", "idempotency_key"])
    op.drop_column("check_in", "caller")
    # Owners given to PRIVATE objectives stay: they are their creators either way.
