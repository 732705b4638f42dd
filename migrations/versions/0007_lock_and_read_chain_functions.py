"""lock-and-read functions for the roll-up write path

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 19:00:00.000000

Two PL/pgSQL functions that take a roll-up's row locks and read what the roll-up needs
in one round trip. They compute nothing: the roll-up itself stays in the pure rules
(service/domain/rules.py), in Python.

- `okr_lock_chain(org, start[])` locks `start` and every ancestor in id order (the one
  global lock order), repeats while a concurrent re-alignment moved the chain, then
  reads the locked objectives (with their cycle's dates) and every part of each (its
  key results and aligned children) in a new statement, so under READ COMMITTED it sees
  every roll-up committed before its locks were granted. Returns json.
- `okr_check_in_read(org, key_result, caller, idempotency_key)` locks the key result
  first (as every key-result write does), then reads its objective and cycle, the
  caller's earlier check-in under that key, and, when there is none, locks and reads the
  chain (`okr_lock_chain`), the key result's latest check-in and draws the new check-in's
  id. Returns json (NULL when the key result is not in the organization).

Downgrade drops both functions.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LOCK_CHAIN = """
CREATE OR REPLACE FUNCTION okr_lock_chain(p_org bigint, p_start bigint[]) RETURNS json
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_locked bigint[] := '{}';
    v_ids bigint[];
BEGIN
    LOOP
        -- Each statement of a VOLATILE function takes a new snapshot: after the locks
        -- of the previous round, this walk sees every change committed before them.
        WITH RECURSIVE up(id, parent_id) AS (
            SELECT id, parent_id FROM objective
            WHERE id = ANY(p_start) AND organization_id = p_org
            UNION
            SELECT o.id, o.parent_id FROM objective o JOIN up ON o.id = up.parent_id
            WHERE o.organization_id = p_org
        )
        SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM up;
        EXIT WHEN v_ids <@ v_locked;
        SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO v_locked
        FROM unnest(v_ids || v_locked) AS x;
        PERFORM 1 FROM (
            SELECT o.id FROM objective o
            WHERE o.id = ANY(v_locked) AND o.organization_id = p_org
            ORDER BY o.id FOR UPDATE OF o
        ) AS locked;
    END LOOP;
    RETURN json_build_object(
        'objectives', (
            SELECT coalesce(json_agg(json_build_array(
                o.id, o.parent_id, o.team_id, o.cycle_id, o.progress, o.has_check_in,
                o.score, c.starts_on, c.ends_on)), '[]')
            FROM objective o JOIN cycle c ON c.id = o.cycle_id
            WHERE o.id = ANY(v_locked) AND o.organization_id = p_org
        ),
        'parts', (
            SELECT coalesce(json_agg(json_build_array(
                p.is_key_result, p.id, p.owner, p.weight, p.progress, p.checked_in,
                p.score, p.archived)), '[]')
            FROM (
                SELECT true AS is_key_result, id, objective_id AS owner, weight, progress,
                       last_check_in_id IS NOT NULL AS checked_in, score, false AS archived
                FROM key_result
                WHERE objective_id = ANY(v_locked) AND organization_id = p_org
                UNION ALL
                SELECT false, id, parent_id, weight, progress, has_check_in, score,
                       archived_at IS NOT NULL
                FROM objective WHERE parent_id = ANY(v_locked) AND organization_id = p_org
            ) AS p
        )
    );
END
$$;
"""

CHECK_IN_READ = """
CREATE OR REPLACE FUNCTION okr_check_in_read(
    p_org bigint, p_key_result bigint, p_caller text, p_key text
) RETURNS json
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_kr key_result;
    v_earlier json;
    v_chain json;
    v_latest json;
    v_next bigint;
BEGIN
    SELECT * INTO v_kr FROM key_result
    WHERE id = p_key_result AND organization_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF p_key IS NOT NULL THEN
        SELECT row_to_json(c) INTO v_earlier FROM check_in c
        WHERE c.key_result_id = p_key_result AND c.caller = p_caller
          AND c.idempotency_key = p_key AND c.organization_id = p_org;
    END IF;
    IF v_earlier IS NULL THEN
        v_chain := okr_lock_chain(p_org, ARRAY[v_kr.objective_id]);
        SELECT json_build_array(c.measured_at, c.id) INTO v_latest FROM check_in c
        WHERE c.key_result_id = p_key_result
        ORDER BY c.measured_at DESC, c.id DESC LIMIT 1;
        v_next := nextval(pg_get_serial_sequence('check_in', 'id'));
    END IF;
    RETURN (
        SELECT json_build_object(
            'key_result', row_to_json(v_kr),
            'objective', row_to_json(o),
            'cycle', row_to_json(c),
            'earlier', v_earlier,
            'chain', v_chain,
            'latest', v_latest,
            'next_id', v_next
        )
        FROM objective o JOIN cycle c ON c.id = o.cycle_id
        WHERE o.id = v_kr.objective_id
    );
END
$$;
"""


def upgrade() -> None:
    op.execute(LOCK_CHAIN)
    op.execute(CHECK_IN_READ)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS okr_check_in_read(bigint, bigint, text, text)")
    op.execute("DROP FUNCTION IF EXISTS okr_lock_chain(bigint, bigint[])")
