"""Authentication at the speed of the data (issue 11; issue 12 item 4): one statement
with no transaction, a short per-process cache of principals for WebSocket
connection_init that revocations empty at once, one read for a burst of one token, and
a queue instead of refusals when many wait for the authentication pool."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from service.auth import Authenticator, PrincipalCache, token_digest
from service.db import Database, count_statements
from service.domain.errors import Unauthenticated
from service.domain.principal import Principal
from service.fanout import EventHub
from service.settings import Settings
from service.usecases import organizations
from tests.factories import JWT_SECRET


def principal(org: int = 1, seq: int = 5, user: int = 7, expires: float | None = None):
    return Principal(
        organization_id=org, role="MEMBER", user_id=user, event_seq=seq, expires_at=expires
    )


# --- the cache on its own ---------------------------------------------------------------


def test_the_cache_is_keyed_by_a_digest_and_holds_for_its_ttl_only():
    cache = PrincipalCache(ttl=0.2)
    key = token_digest("secret-token")
    assert key != b"secret-token" and len(key) == 32
    cache.put(key, principal(), time.monotonic())
    assert cache.get(key) == principal()
    assert all(b"secret-token" not in k for k in cache.entries)
    time.sleep(0.25)
    assert cache.get(key) is None and not cache.entries


def test_an_expired_token_is_never_answered_from_the_cache():
    cache = PrincipalCache(ttl=60)
    key = token_digest("t")
    cache.put(key, principal(expires=time.time() - 1), time.monotonic())
    assert cache.get(key) is None


def test_a_later_event_of_the_organization_drops_its_principals_and_only_those():
    cache = PrincipalCache(ttl=60)
    mine, other = token_digest("a"), token_digest("b")
    cache.put(mine, principal(org=1, seq=5), time.monotonic())
    cache.put(other, principal(org=2, seq=5), time.monotonic())
    cache.notice(1, 5)  # an event the principal was read after: it stands
    assert cache.get(mine) is not None
    cache.notice(1, 6)
    assert cache.get(mine) is None and cache.get(other) is not None
    # A read that began before event 6 arrives late: not kept.
    cache.put(mine, principal(org=1, seq=5), time.monotonic())
    assert cache.get(mine) is None
    cache.put(mine, principal(org=1, seq=6), time.monotonic())
    assert cache.get(mine) is not None
    cache.notice(None, 0)  # notifications may have been missed: forget everything
    assert not cache.entries and cache.get(other) is None


def test_the_cache_is_bounded_and_keeps_the_recently_used():
    cache = PrincipalCache(ttl=60, size=3)
    keys = [token_digest(str(i)) for i in range(4)]
    for k in keys[:3]:
        cache.put(k, principal(), time.monotonic())
    assert cache.get(keys[0]) is not None  # used: the oldest is now keys[1]
    cache.put(keys[3], principal(), time.monotonic())
    assert len(cache.entries) == 3
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None


def test_nothing_is_cached_while_notifications_cannot_arrive():
    cache = PrincipalCache(ttl=60)
    up = True
    cache.listening = lambda: up
    key = token_digest("t")
    cache.put(key, principal(), time.monotonic())
    up = False
    assert cache.get(key) is None
    cache.put(key, principal(), time.monotonic())
    assert not cache.entries


# --- against the database ------------------------------------------------------------------


@pytest.fixture
async def member(db: Database) -> tuple[int, int, str]:
    from service.auth import issue_token

    created, admin = await db.transaction(
        lambda s: organizations.create_organization(
            s, "Acme Logistics", "admin@acme.example", "Ada Admin"
        )
    )
    return created.id, admin.id, issue_token(JWT_SECRET, admin.id, created.id)


def authenticator(db: Database) -> Authenticator:
    auth = Authenticator(Settings(jwt_secret=JWT_SECRET, database_url=None), db)
    auth.cache.listening = lambda: True
    auth.healthy = lambda: True
    return auth


async def test_a_lookup_is_one_statement_outside_any_transaction(db: Database, member):
    _org, admin_id, token = member
    auth = authenticator(db)
    holder = count_statements()
    found = await auth.authenticate(token)
    assert found.user_id == admin_id and holder.n == 1
    async with auth._connect() as conn:
        await conn.execute(text("SELECT 1"))
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None and not raw.is_in_transaction()


async def test_a_burst_of_one_token_reads_once_and_http_always_reads(db: Database, member):
    _org, admin_id, token = member
    auth = authenticator(db)
    found = await asyncio.gather(*(auth.authenticate(token, cached=True) for _ in range(200)))
    assert {p.user_id for p in found} == {admin_id}
    assert auth.lookups == 1
    await auth.authenticate(token, cached=True)
    assert auth.lookups == 1
    await auth.authenticate(token)  # HTTP and later operations: from the database
    await auth.authenticate(token)
    assert auth.lookups == 3


async def test_a_revoked_key_is_forgotten_as_soon_as_its_event_is_heard(db: Database, member):
    org_id, _admin, _token = member
    hub = EventHub(db)
    await hub.start()
    try:
        auth = authenticator(db)
        heard = asyncio.Event()
        hub.notice_hooks.append(auth.cache.notice)
        hub.notice_hooks.append(lambda org, _seq: org == org_id and heard.set())
        auth.cache.listening = lambda: hub.listening
        _row, key = await db.transaction(lambda s: organizations.create_api_key(s, org_id, "svc"))
        assert (await auth.authenticate(key, cached=True)).role == "SERVICE"
        assert auth.cache.get(token_digest(key)) is not None
        heard.clear()
        await db.transaction(lambda s: organizations.revoke_api_key(s, org_id, "svc"))
        await asyncio.wait_for(heard.wait(), 1.5)
        assert auth.cache.get(token_digest(key)) is None
        with pytest.raises(Unauthenticated, match="revoked"):
            await auth.authenticate(key, cached=True)
    finally:
        await hub.stop()


async def test_a_failed_lookup_is_not_cached(db: Database, member):
    org_id, admin_id, token = member
    auth = authenticator(db)
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE app_user SET active = false WHERE id = :id"), {"id": admin_id}
        )
    with pytest.raises(Unauthenticated, match="deactivated"):
        await auth.authenticate(token, cached=True)
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE app_user SET active = true WHERE id = :id"), {"id": admin_id}
        )
    assert (await auth.authenticate(token, cached=True)).user_id == admin_id
    assert org_id


async def test_many_waiting_for_a_small_pool_are_queued_not_refused(
    database_url: str, db: Database, member
):
    """200 distinct lookups at once through two connections whose pool gives up after
    50 ms, while requests hold both connections for 0.3 s: every lookup waits its turn
    and succeeds. Without a healthy database the same starvation is refused (1013 on a
    socket, 503 over HTTP)."""
    org_id, _admin, _token = member
    keys = []
    for i in range(20):
        _row, key = await db.transaction(
            lambda s, i=i: organizations.create_api_key(s, org_id, f"k{i}")
        )
        keys.append(key)
    small = Database(database_url, pool_size=1, pool_timeout=0.05)
    try:
        auth = authenticator(small)

        async def hold() -> None:
            async with small.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.3)"))

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.05)
        found = await asyncio.gather(*(auth.authenticate(keys[i % 20]) for i in range(200)))
        await asyncio.gather(*holders)
        assert len(found) == 200 and {p.organization_id for p in found} == {org_id}
        assert auth.lookups == 200

        auth.healthy = lambda: False
        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(sa_exc.TimeoutError):
            await auth.authenticate(keys[0])
        await asyncio.gather(*holders)
    finally:
        await small.dispose()
