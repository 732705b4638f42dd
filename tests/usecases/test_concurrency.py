"""No lost updates: many concurrent check-ins under one tree, each in its own
transaction on its own connection, and then every stored number equals a fresh
recomputation and the outbox has one event per check-in, gapless, in commit order."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import text

from service.db import Database
from service.domain import enums as domain_enums
from service.usecases import commands, cycles, key_results, objectives
from service.verify import verify, verify_event_sequences
from tests.factories import Org, around_today

CHECK_INS = 60


async def build_tree(db: Database, org: Org) -> tuple[int, list[int]]:
    p = org.admin
    from datetime import date

    start, end = (date.fromisoformat(d) for d in around_today())
    cycle = await db.transaction(
        lambda s: cycles.create_cycle(s, p, commands.CreateCycle("Q", start, end))
    )
    await db.transaction(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )

    async def objective(title, parent=None, weight=1.0):
        return (
            await db.transaction(
                lambda s: objectives.create_objective(
                    s,
                    p,
                    commands.CreateObjective(
                        cycle_id=cycle.id, title=title, parent_id=parent, weight=weight
                    ),
                )
            )
        ).id

    root = await objective("Root")
    krs = []
    for i in range(4):
        mid = await objective(f"Dept {i}", root, weight=i + 1)
        for j in range(2):
            leaf = await objective(f"Team {i}.{j}", mid)
            for k in range(2):
                kr = await db.transaction(
                    lambda s, o=leaf, k=k: key_results.create_key_result(
                        s,
                        p,
                        commands.CreateKeyResult(
                            objective_id=o,
                            title=f"KR {k}",
                            type=domain_enums.KeyResultType.INCREASE,
                            start_value=0,
                            target_value=100,
                            weight=k + 1,
                        ),
                    )
                )
                krs.append(kr.id)
    return root, krs


async def test_concurrent_check_ins_lose_nothing(db: Database, org: Org):
    root, krs = await build_tree(db, org)
    rng = random.Random(7)
    plan = [(rng.choice(krs), rng.uniform(0, 120)) for _ in range(CHECK_INS)]

    async def one(kr: int, value: float):
        return await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=value)
            )
        )

    await asyncio.gather(*(one(kr, v) for kr, v in plan))

    async with db.connect() as conn:
        checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert checked == len(krs) + 1 + 4 + 8
        assert await verify_event_sequences(conn) == []
        n = await conn.execute(text("SELECT count(*) FROM event WHERE kind = 'CHECK_IN'"))
        assert n.scalar() == CHECK_INS
        # The event committed last carries the root's final stored progress.
        last = (
            await conn.execute(
                text("SELECT payload FROM event WHERE kind = 'CHECK_IN' ORDER BY seq DESC LIMIT 1")
            )
        ).scalar()
        stored = (
            await conn.execute(text("SELECT progress FROM objective WHERE id = :id"), {"id": root})
        ).scalar()
    root_change = [c for c in last["changes"] if c["type"] == "Objective" and c["id"] == root]
    assert root_change and abs(root_change[0]["progress"] - stored) < 1e-12


async def test_concurrent_check_ins_through_the_api(db: Database, org: Org):
    _root, krs = await build_tree(db, org)
    from schema.ids import encode

    query = "mutation($i: CheckInInput!) { checkIn(input: $i) { userErrors { code } } }"
    results = await asyncio.gather(
        *(
            org.call(
                query,
                {"i": {"keyResultId": encode("KeyResult", krs[n % len(krs)]), "value": float(n)}},
            )
            for n in range(50)
        )
    )
    assert all(r["checkIn"]["userErrors"] == [] for r in results)
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
    assert mismatches == []


async def _check(db: Database, checked_in: int | None = None) -> None:
    """verify clean, gapless sequences, and (when given) one CHECK_IN event per check-in."""
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert await verify_event_sequences(conn) == []
        events_ = (
            await conn.execute(text("SELECT count(*) FROM event WHERE kind = 'CHECK_IN'"))
        ).scalar()
        rows = (await conn.execute(text("SELECT count(*) FROM check_in"))).scalar()
        linked = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM event e JOIN check_in c ON c.id = e.check_in_id "
                    "WHERE e.kind = 'CHECK_IN'"
                )
            )
        ).scalar()
    assert events_ == rows == linked
    if checked_in is not None:
        assert rows == checked_in


async def test_many_writers_on_one_key_result(db: Database, org: Org):
    """Forty writers on the very same key result: each queues on its lock, none is lost,
    and the stored current value is the one committed last."""
    _root, krs = await build_tree(db, org)
    kr = krs[0]
    values = [float(v) for v in range(40)]

    async def one(value: float):
        return await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=value)
            )
        )

    done = await asyncio.gather(*(one(v) for v in values))
    assert len({row.id for row, _kr in done}) == len(values)
    await _check(db, len(values))
    async with db.connect() as conn:
        last = (
            await conn.execute(
                text(
                    "SELECT k.current_value, c.value FROM key_result k "
                    "JOIN check_in c ON c.id = k.last_check_in_id WHERE k.id = :id"
                ),
                {"id": kr},
            )
        ).one()
        top = (
            await conn.execute(
                text(
                    "SELECT value FROM check_in WHERE key_result_id = :id "
                    "ORDER BY measured_at DESC, id DESC LIMIT 1"
                ),
                {"id": kr},
            )
        ).scalar()
    assert last.current_value == last.value == top


async def test_racing_retries_with_one_idempotency_key(db: Database, org: Org):
    """The same key sent by twenty concurrent retries: one check-in, one event, and every
    retry answers with it."""
    _root, krs = await build_tree(db, org)

    async def one():
        return await db.transaction(
            lambda s: key_results.check_in(
                s,
                org.admin,
                commands.CheckIn(key_result_id=krs[3], value=42.0, idempotency_key="retry-1"),
            )
        )

    done = await asyncio.gather(*(one() for _ in range(20)))
    assert len({row.id for row, _kr in done}) == 1
    await _check(db, 1)


async def test_writers_on_disjoint_chains(db: Database, org: Org):
    """Two separate trees written at once: no lock is shared but the organization's
    sequence; both stay exact and the events gapless."""
    _a, left = await build_tree(db, org)
    _b, right = await build_tree(db, org)
    rng = random.Random(11)
    plan = [(rng.choice(left if n % 2 else right), rng.uniform(0, 100)) for n in range(60)]

    async def one(kr: int, value: float):
        return await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=value)
            )
        )

    await asyncio.gather(*(one(kr, v) for kr, v in plan))
    await _check(db, len(plan))


async def test_check_ins_while_the_tree_is_realigned(db: Database, org: Org):
    """Check-ins racing re-alignments (chains that change under shared ancestors) and
    weight changes on sibling key results: every roll-up still exact afterwards. The
    moved leaves take no check-ins meanwhile: align_objective locks the objective before
    its ancestors, out of the id order, so a check-in under the very objective being
    moved can deadlock with it (retried, but not without end)."""
    root, krs = await build_tree(db, org)
    async with db.connect() as conn:
        mids = list(
            (
                await conn.execute(
                    text("SELECT id FROM objective WHERE parent_id = :r ORDER BY id"),
                    {"r": root},
                )
            ).scalars()
        )
        leaves = list(
            (
                await conn.execute(
                    text("SELECT id FROM objective WHERE parent_id = ANY(:m) ORDER BY id"),
                    {"m": mids},
                )
            ).scalars()
        )
    rng = random.Random(3)
    moved = leaves[::2]
    async with db.connect() as conn:
        krs = list(
            (
                await conn.execute(
                    text("SELECT id FROM key_result WHERE objective_id <> ALL(:m) ORDER BY id"),
                    {"m": moved},
                )
            ).scalars()
        )
    check_ins = 0
    work = []
    for n in range(60):
        if n % 6 == 0:
            leaf, mid = rng.choice(moved), rng.choice(mids)
            work.append(
                db.transaction(
                    lambda s, leaf=leaf, mid=mid: objectives.align_objective(
                        s, org.admin, commands.AlignObjective(leaf, mid)
                    )
                )
            )
        elif n % 6 == 1:
            kr, w = rng.choice(krs), rng.uniform(0, 5)
            work.append(
                db.transaction(
                    lambda s, kr=kr, w=w: key_results.update_key_result(
                        s, org.admin, commands.UpdateKeyResult(kr, None, weight=w)
                    )
                )
            )
        else:
            kr, v = rng.choice(krs), rng.uniform(0, 100)
            check_ins += 1
            work.append(
                db.transaction(
                    lambda s, kr=kr, v=v: key_results.check_in(
                        s, org.admin, commands.CheckIn(key_result_id=kr, value=v)
                    )
                )
            )
    await asyncio.gather(*work)
    await _check(db, check_ins)


async def test_backdated_check_ins_racing(db: Database, org: Org):
    """Backdated and current check-ins on one key result at once: the current value is
    the one measured last, whatever the commit order."""
    from datetime import UTC, datetime, timedelta

    _root, krs = await build_tree(db, org)
    kr = krs[1]
    base = datetime.now(UTC) - timedelta(days=30)  # inside the cycle (around today)
    stamps = [base + timedelta(hours=h) for h in random.Random(5).sample(range(500), 30)]

    async def one(n: int, at: datetime):
        return await db.transaction(
            lambda s: key_results.check_in(
                s, org.admin, commands.CheckIn(key_result_id=kr, value=float(n), measured_at=at)
            )
        )

    await asyncio.gather(*(one(n, at) for n, at in enumerate(stamps)))
    await _check(db, len(stamps))
    latest = stamps.index(max(stamps))
    async with db.connect() as conn:
        current = (
            await conn.execute(
                text("SELECT current_value FROM key_result WHERE id = :id"), {"id": kr}
            )
        ).scalar()
    assert current == float(latest)


async def test_retractions_and_corrections_racing_check_ins(db: Database, org: Org):
    """Retractions and corrections racing check-ins on the same key results (issue 21):
    each retraction queues on the key result's lock like a check-in, so `okr verify` is
    clean afterwards, the events are gapless, one per write that succeeded, and a check-in
    retracted by two writers at once is retracted once: the other gets CONFLICT and
    writes no event."""
    from datetime import UTC, datetime, timedelta

    from service.domain.errors import ErrorCode, Rejected
    from service.usecases import corrections

    _root, krs = await build_tree(db, org)
    hot = krs[:3]  # every kind of write lands on these
    base = datetime.now(UTC) - timedelta(days=30)
    seeded: list[int] = []
    for n in range(18):
        row, _kr = await db.transaction(
            lambda s, n=n: key_results.check_in(
                s,
                org.admin,
                commands.CheckIn(
                    key_result_id=hot[n % 3],
                    value=float(10 + n),
                    measured_at=base + timedelta(days=n),
                ),
            )
        )
        seeded.append(row.id)
    rng = random.Random(21)
    work = []
    kinds: list[str] = []
    for n in range(60):
        if n % 4 == 0:
            target = seeded[(n // 4) % len(seeded)]
            kinds.append("retract")
            work.append(
                lambda s, t=target: corrections.retract_check_in(
                    s, org.admin, commands.RetractCheckIn(t, "race")
                )
            )
        elif n % 4 == 1:
            target = seeded[(n // 4 + 7) % len(seeded)]
            kinds.append("correct")
            work.append(
                lambda s, t=target, v=rng.uniform(0, 100): corrections.correct_check_in(
                    s, org.admin, commands.CorrectCheckIn(t, v, "race")
                )
            )
        else:
            kinds.append("check_in")
            work.append(
                lambda s, kr=rng.choice(hot), v=rng.uniform(0, 100): key_results.check_in(
                    s, org.admin, commands.CheckIn(key_result_id=kr, value=v)
                )
            )

    async def run(write):
        try:
            return await db.transaction(write)
        except Rejected as exc:
            return exc

    results = await asyncio.gather(*(run(w) for w in work))
    refused = [r for r in results if isinstance(r, Rejected)]
    # Only the second writer on one check-in is refused, and only as a conflict.
    assert refused and {r.code for r in refused} == {ErrorCode.CONFLICT}
    done = {k: 0 for k in ("retract", "correct", "check_in")}
    for kind, result in zip(kinds, results, strict=True):
        if not isinstance(result, Rejected):
            done[kind] += 1
    assert done["check_in"] == kinds.count("check_in")
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert await verify_event_sequences(conn) == []
        counted = dict(
            (await conn.execute(text("SELECT kind, count(*) FROM event GROUP BY kind"))).all()
        )
        retracted = (
            await conn.execute(text("SELECT count(*) FROM check_in WHERE retracted_at IS NOT NULL"))
        ).scalar()
        corrections_made = (
            await conn.execute(
                text("SELECT count(*) FROM check_in WHERE correction_of_id IS NOT NULL")
            )
        ).scalar()
    assert counted["CHECK_IN"] == len(seeded) + done["check_in"]
    assert counted.get("CHECK_IN_RETRACTED", 0) == done["retract"]
    assert counted.get("CHECK_IN_CORRECTED", 0) == done["correct"] == corrections_made
    assert retracted == done["retract"] + done["correct"]


async def test_measurement_retractions_racing_check_ins_and_measurements(db: Database, org: Org):
    """retractMeasurement (metric, then key results in id order, then chains) racing
    measurements and manual check-ins on the key results bound to the metric: verify
    clean, events gapless, every measurement retracted with all the check-ins it made."""
    from datetime import UTC, datetime, timedelta

    from service.usecases import corrections, metrics

    _root, krs = await build_tree(db, org)
    bound = krs[:4]
    await db.transaction(
        lambda s: metrics.create_metric(s, org.admin, commands.CreateMetric("cost", "Cost"))
    )
    metric_id = (await db.transaction(lambda s: metrics.metric_by_key(s, org.admin, "cost"))).id
    for kr in bound:
        await db.transaction(
            lambda s, kr=kr: metrics.bind_key_result(
                s, org.admin, commands.BindKeyResult(kr, metric_id)
            )
        )
    base = datetime.now(UTC) - timedelta(days=30)
    instants = [base + timedelta(days=n) for n in range(12)]
    await db.transaction(
        lambda s: metrics.record_measurements(
            s,
            org.admin,
            [commands.MeasurementInput("cost", float(n), at) for n, at in enumerate(instants)],
        )
    )
    rng = random.Random(5)
    work = []
    for n in range(36):
        if n % 3 == 0:
            at = instants[n // 3]
            work.append(
                lambda s, at=at: corrections.retract_measurement(
                    s, org.admin, commands.RetractMeasurement("cost", at, "race")
                )
            )
        elif n % 3 == 1:
            at = base + timedelta(days=12, hours=n)  # after the measurements above
            work.append(
                lambda s, at=at: metrics.record_measurements(
                    s, org.admin, [commands.MeasurementInput("cost", rng.uniform(0, 99), at)]
                )
            )
        else:
            work.append(
                lambda s, kr=rng.choice(bound), v=rng.uniform(0, 99): key_results.check_in(
                    s, org.admin, commands.CheckIn(key_result_id=kr, value=v)
                )
            )
    await asyncio.gather(*(db.transaction(w) for w in work))
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == [], mismatches[:5]
        assert await verify_event_sequences(conn) == []
        left = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM check_in c JOIN measurement m ON m.id = c.measurement_id"
                    " WHERE (m.retracted_at IS NULL) <> (c.retracted_at IS NULL)"
                )
            )
        ).scalar()
        retracted = (
            await conn.execute(
                text("SELECT count(*) FROM measurement WHERE retracted_at IS NOT NULL")
            )
        ).scalar()
        counted = dict(
            (await conn.execute(text("SELECT kind, count(*) FROM event GROUP BY kind"))).all()
        )
    assert left == 0 and retracted == 12
    assert counted["MEASUREMENT_RETRACTED"] == 12
    assert counted["CHECK_IN_RETRACTED"] == 12 * len(bound)
