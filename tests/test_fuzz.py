"""Thousands of generated queries and mutations, as an authenticated member: no
response is an internal error, and the stored roll-ups stay exact afterwards."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes, queries

from service import demo
from service.auth import issue_token
from service.db import Database
from service.usecases import organizations
from service.verify import verify, verify_event_sequences
from tests.conftest import JWT_SECRET

SDL = (Path(__file__).parent.parent / "schema" / "schema.graphql").read_text()
EXAMPLES = 1500


def _ids() -> list[str]:
    from schema.ids import encode

    real = [
        encode(t, i)
        for t in (
            "Objective",
            "KeyResult",
            "Team",
            "Cycle",
            "User",
            "CheckIn",
            "Comment",
            "Event",
            "Organization",
        )
        for i in range(1, 12)
    ]
    return [*real, "garbage", "", "T2JqZWN0aXZlOi0x", "VXNlcjo5OTk5OTk5OTk5OTk5OTk5OTk5"]


SCALARS = {
    "ID": st.sampled_from(_ids()).map(nodes.String),
    "Date": st.dates().map(lambda d: nodes.String(d.isoformat())),
    "DateTime": st.datetimes().map(lambda d: nodes.String(d.isoformat() + "Z")),
}
OPERATIONS = queries(SDL, custom_scalars=SCALARS) | mutations(SDL, custom_scalars=SCALARS)


def generate(count: int) -> list[str]:
    """Draw `count` operations (the same ones on every run)."""
    drawn: list[str] = []

    @settings(
        max_examples=count,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(operation=OPERATIONS)
    def collect(operation: str) -> None:
        drawn.append(operation)

    collect()
    return drawn


async def test_generated_operations_never_fail_internally(client, db: Database):
    org_id, _admin = await demo.seed(db)
    async with db.sessions() as s:
        sam = await organizations.user_by_email(s, org_id, "sam@northwind.example")
    token = issue_token(JWT_SECRET, sam.id, org_id)  # a member of the Warehouse team
    operations = generate(EXAMPLES)
    assert len(operations) >= 1000
    failures = []
    for operation in operations:
        r = await client.post(
            "/graphql", json={"query": operation}, headers={"Authorization": f"Bearer {token}"}
        )
        if r.status_code not in (200, 400) or "INTERNAL_SERVER_ERROR" in r.text:
            failures.append((operation, r.status_code, r.text[:300]))
    assert failures == [], failures[:3]
    async with db.connect() as conn:
        _checked, mismatches = await verify(conn)
        assert mismatches == []
        assert await verify_event_sequences(conn) == []
