"""The demo organization: an operations department in the middle of its quarter.

Everything goes through the use cases (so roll-ups and events are exact), then the
check-ins are dated across the weeks behind us so the tree has a history.

The demo keeps its own date: `okr serve --demo` starts the OKR clock (service/clock.py)
at `NOW`, 25 November 2026 at noon UTC, unless `OKR_CLOCK_START` says otherwise, and the
seed is dated around the clock. So the cycle is always "Q4 2026", and every answer in
the README's tour is the same whatever day the demo is run (tests/system/test_readme.py runs
it, also under a faked date past a year's end)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select, text

from service import clock, reminders
from service.db import Database
from service.domain import enums as domain_enums
from service.domain.principal import Principal
from service.models import Organization, pk_of
from service.usecases import commands, cycles, key_results, metrics, objectives, organizations

# The demo's instant: two days after the logistics service's last weekly figures, five
# weeks before the quarter ends.
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

SLUG = "northwind"
ADMIN_EMAIL = "dana@northwind.example"


def quarter_of(today: date) -> tuple[str, date, date]:
    q = (today.month - 1) // 3
    start = date(today.year, 3 * q + 1, 1)
    end = date(today.year + (q == 3), (3 * q + 3) % 12 + 1, 1) - timedelta(days=1)
    return f"Q{q + 1} {today.year}", start, end


async def is_empty(db: Database) -> bool:
    async with db.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(Organization))).scalar() == 0


async def seed(db: Database) -> tuple[int, int]:
    """Create the demo organization around the OKR clock's present (`NOW` under
    `okr serve --demo`); returns (organization id, admin user id)."""
    now = clock.now().replace(minute=0, second=0, microsecond=0)  # whole hours: the README
    today = now.date()
    org, admin = await db.transaction(
        lambda s: organizations.create_organization(
            s, "Northwind Distribution", ADMIN_EMAIL, "Dana Okafor", SLUG
        )
    )
    p = Principal(organization_id=pk_of(org), role="ADMIN", user_id=pk_of(admin))

    async def tx(fn):
        return await db.transaction(fn)

    people = {}
    for key, name, email, role in [
        ("sam", "Sam Lindqvist", "sam@northwind.example", "MEMBER"),
        ("priya", "Priya Raman", "priya@northwind.example", "MEMBER"),
        ("lee", "Lee Moreau", "lee@northwind.example", "MEMBER"),
        ("finance", "Finance Office", "finance@northwind.example", "VIEWER"),
    ]:
        people[key] = await tx(
            lambda s, n=name, e=email, r=role: organizations.create_user(
                s, p, commands.CreateUser(n, e, domain_enums.Role(r))
            )
        )
    ops = await tx(
        lambda s: organizations.create_team(s, p, commands.CreateTeam("Operations", None))
    )
    teams = {"ops": ops}
    for key, name in [
        ("warehouse", "Warehouse"),
        ("transport", "Transport"),
        ("procurement", "Procurement"),
    ]:
        teams[key] = await tx(
            lambda s, n=name: organizations.create_team(s, p, commands.CreateTeam(n, ops.id))
        )
    for team, person in [
        ("ops", admin),
        ("warehouse", people["sam"]),
        ("transport", people["priya"]),
        ("procurement", people["lee"]),
    ]:
        await tx(
            lambda s, t=teams[team].id, u=person.id: organizations.add_team_member(
                s, p, commands.TeamMember(t, u)
            )
        )

    name, starts_on, ends_on = quarter_of(today)
    cycle = await tx(
        lambda s: cycles.create_cycle(s, p, commands.CreateCycle(name, starts_on, ends_on))
    )
    await tx(
        lambda s: cycles.set_cycle_status(
            s, p, commands.SetCycleStatus(cycle.id, domain_enums.CycleStatus.ACTIVE)
        )
    )

    async def objective(title, team, owner, parent=None, description=None):
        return await tx(
            lambda s: objectives.create_objective(
                s,
                p,
                commands.CreateObjective(
                    cycle_id=cycle.id,
                    title=title,
                    team_id=teams[team].id,
                    owner_id=owner.id,
                    parent_id=parent.id if parent else None,
                    description=description,
                ),
            )
        )

    async def key_result(
        obj, title, kind, start=None, target=None, measure="NUMBER", unit=None, owner=None
    ):
        return await tx(
            lambda s: key_results.create_key_result(
                s,
                p,
                commands.CreateKeyResult(
                    objective_id=obj.id,
                    title=title,
                    type=domain_enums.KeyResultType(kind),
                    measure=domain_enums.Measure(measure),
                    unit=unit,
                    start_value=start,
                    target_value=target,
                    owner_id=owner.id if owner else None,
                ),
            )
        )

    costs = await objective(
        "Reduce distribution costs by 15%",
        "ops",
        admin,
        description="Cost per order is 4.20 today; the board asked for 15% off by quarter end "
        "without losing on-time dispatch.",
    )
    plan = [
        (
            await key_result(
                costs,
                "Cost per order from 4.20 to 3.57",
                "DECREASE",
                4.20,
                3.57,
                "CURRENCY",
                "EUR",
                admin,
            ),
            [],  # fed by the cost_per_order metric below
        ),
        (
            await key_result(
                costs,
                "On-time dispatch at or above 98%",
                "STAY_ABOVE",
                96.5,
                98.0,
                "PERCENT",
                "%",
                admin,
            ),
            [97.2, 97.8, 98.1, 98.4, 98.3, 98.6],
        ),
        (
            await key_result(
                costs, "New packaging supplier signed", "MILESTONE", owner=people["lee"]
            ),
            [0.0],
        ),
    ]
    warehouse = await objective(
        "Cut pick-and-pack cost per order", "warehouse", people["sam"], costs
    )
    plan += [
        (
            await key_result(
                warehouse,
                "Pick rate from 90 to 120 lines per hour",
                "INCREASE",
                90,
                120,
                unit="lines/h",
                owner=people["sam"],
            ),
            [92, 96, 99, 103, 106, 108],
        ),
        (
            await key_result(
                warehouse,
                "Packaging waste per order from 180 g to 120 g",
                "DECREASE",
                180,
                120,
                unit="g",
                owner=people["sam"],
            ),
            [178, 171, 166, 160],
        ),
    ]
    transport = await objective("Consolidate outbound freight", "transport", people["priya"], costs)
    plan += [
        (
            await key_result(
                transport,
                "Average truck fill from 68% to 85%",
                "INCREASE",
                68,
                85,
                "PERCENT",
                "%",
                people["priya"],
            ),
            [70, 72, 75, 76, 79],
        ),
    ]
    damage = await key_result(
        transport,
        "Damaged parcels from 1.8% to 1.0% of orders",
        "DECREASE",
        1.8,
        1.0,
        "PERCENT",
        "%",
        people["priya"],
    )
    # Nobody has checked in on this one: it shows as stale.
    await key_result(
        transport,
        "Express shipments at or below 5% of orders",
        "STAY_BELOW",
        7.5,
        5.0,
        "PERCENT",
        "%",
        people["priya"],
    )
    procurement = await objective(
        "Renegotiate packaging contracts", "procurement", people["lee"], costs
    )
    plan += [
        (
            await key_result(
                procurement,
                "Packaging cost per order from 0.42 to 0.34",
                "DECREASE",
                0.42,
                0.34,
                "CURRENCY",
                "EUR",
                people["lee"],
            ),
            [0.41, 0.40, 0.38],
        ),
    ]

    start = datetime.combine(starts_on, datetime.min.time(), tzinfo=UTC)
    for kr, values in plan:
        for i, value in enumerate(values):
            at = max(
                start + timedelta(hours=12), now - timedelta(days=2 + 7 * (len(values) - 1 - i))
            )
            check_in, _ = await tx(
                lambda s, k=kr.id, v=value: key_results.check_in(
                    s, p, commands.CheckIn(key_result_id=k, value=v, confidence=0.7)
                )
            )
            await tx(lambda s, c=check_in.id, t=at: _date_check_in(s, c, t))
    await tx(lambda s: _date_definitions(s, pk_of(org), start))
    await _metrics(db, p, plan[0][0], damage, now)
    # The reminders already due (a key result nobody has checked in on) are part of the
    # history, not written by whichever run of the job comes first after the seed.
    await tx(lambda s: reminders.write_due_reminders(s, clock.now()))
    await tx(lambda s: _integrations(s, pk_of(org), now))
    return pk_of(org), pk_of(admin)


# Weekly figures the logistics service posts, oldest first, the last two days ago: cost per
# order falls at about 0.05 a week (it fell before the quarter too); damaged parcels creep
# up, so that key result's record moves the wrong way and its realism is UNLIKELY.
COST_PER_ORDER = [4.30, 4.26, 4.22, 4.18, 4.12, 4.07, 4.01, 3.96, 3.92, 3.89]
DAMAGE_RATE = [1.70, 1.74, 1.76, 1.79, 1.83, 1.86]


async def _metrics(db: Database, admin: Principal, cost_kr, damage_kr, now: datetime) -> None:
    """Two metrics the logistics service owns, bound to their key results, and the
    figures it posted weekly (as an API key: the history shows who)."""

    async def tx(fn):
        return await db.transaction(fn)

    service_key, _secret = await tx(
        lambda s: organizations.create_api_key(s, admin.organization_id, "logistics-service")
    )
    service = Principal(
        organization_id=admin.organization_id, role="SERVICE", api_key_id=service_key.id
    )
    for key, name, unit, kr, values in [
        ("cost_per_order", "Distribution cost per order", "EUR", cost_kr, COST_PER_ORDER),
        ("damage_rate", "Damaged parcels", "% of orders", damage_kr, DAMAGE_RATE),
    ]:
        created = await tx(
            lambda s, k=key, n=name, u=unit: metrics.create_metric(
                s, admin, commands.CreateMetric(key=k, name=n, unit=u)
            )
        )
        await tx(
            lambda s, k=kr.id, m=created.id: metrics.bind_key_result(
                s, admin, commands.BindKeyResult(k, m)
            )
        )
        for i, value in enumerate(values):
            at = now - timedelta(days=2 + 7 * (len(values) - 1 - i))
            item = metrics.MeasurementInput(
                metric_key=key, value=value, measured_at=at, source="logistics-service"
            )
            await tx(lambda s, m=item: metrics.record_measurements(s, service, [m]))


async def _date_check_in(session, check_in_id: int, at: datetime) -> None:
    await session.execute(
        text("UPDATE check_in SET created_at = :t, measured_at = :t WHERE id = :id"),
        {"t": at, "id": check_in_id},
    )
    await session.execute(
        text("UPDATE key_result SET last_check_in_at = :t WHERE last_check_in_id = :id"),
        {"t": at, "id": check_in_id},
    )


async def _date_definitions(session, org: int, at: datetime) -> None:
    for table in ("objective", "key_result"):
        await session.execute(
            text(
                f"UPDATE {table} SET created_at = :t, updated_at = :t WHERE organization_id = :org"
            ),
            {"t": at + timedelta(hours=9), "org": org},
        )


# Integrations (service/webhooks.py, service/sources.py). A webhook endpoint that points
# at nothing reachable (the discard port), so the tour's events show failed deliveries
# and their retries (`okr webhook deliveries`); and the damage rate pulled from a local
# Prometheus every hour (README, "Webhooks and metric sources", serves it). Both rows are
# written as they are, without events, so the tour's sequences stay the README's.
DEMO_WEBHOOK_URL = "http://127.0.0.1:9/okr-events"
DEMO_PROMETHEUS_URL = "http://127.0.0.1:9090"
DEMO_PROMQL = "last_over_time(parcels_damaged_percent[1h])"


async def _integrations(session, org: int, now: datetime) -> None:
    from service.secrets import Box
    from service.settings import get_settings
    from service.webhooks import new_secret

    sealed = Box.from_settings(get_settings()).seal(new_secret())
    await session.execute(
        text(
            "INSERT INTO webhook_endpoint (organization_id, url, description, kinds, secret, "
            "last_seq, created_at) SELECT id, :url, :description, '[]', :secret, event_seq, :now "
            "FROM organization WHERE id = :org"
        ),
        {
            "org": org,
            "url": DEMO_WEBHOOK_URL,
            "description": "the chat notifier (not running: its deliveries fail and retry)",
            "secret": sealed,
            "now": now,
        },
    )
    await session.execute(
        text(
            "INSERT INTO metric_source (metric_id, organization_id, kind, url, query, "
            "interval_seconds, next_run_at) SELECT id, :org, 'PROMETHEUS', :url, :query, 3600, "
            ":next FROM metric WHERE organization_id = :org AND key = 'damage_rate'"
        ),
        {
            "org": org,
            "url": DEMO_PROMETHEUS_URL,
            "query": DEMO_PROMQL,
            "next": now + timedelta(hours=1),
        },
    )
