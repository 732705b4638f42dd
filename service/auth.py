"""Who is calling: a user (JWT) or a service (API key), inside one organization.

The principal carries what access checks need (role, teams, the organization's
status bounds and cadence), loaded with one statement per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.credentials import API_KEY_PREFIX, hash_api_key
from service.domain.errors import Unauthenticated
from service.domain.principal import Principal
from service.outage import DatabaseUnavailable
from service.usecases.organizations import create_user_from_identity


def issue_token(secret: str, user_id: int, organization_id: int, ttl_days: int = 30) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "org": str(organization_id),
        "iat": now,
        "exp": now + timedelta(days=ttl_days),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("an Authorization: Bearer token is required")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    # Every token we take (API keys, JWTs) is printable ASCII; anything else (a lone
    # surrogate a WebSocket's JSON can carry, say) is refused here, not in a decoder.
    token = token.strip()
    if not (token.isascii() and token.isprintable()):
        raise Unauthenticated("invalid token: a token is printable ASCII")
    return token


_USER = text(
    """
    SELECT u.id, u.role, u.active, o.id AS org_id, o.on_track_gap, o.at_risk_gap,
           o.check_in_cadence_days, o.event_seq,
           ARRAY(SELECT m.team_id FROM team_membership m WHERE m.user_id = u.id) AS team_ids
    FROM app_user u JOIN organization o ON o.id = u.organization_id
    WHERE u.id = :user_id AND u.organization_id = :org_id
    """
)
_API_KEY = text(
    """
    SELECT k.id, (k.last_used_at < now() - interval '1 minute') IS NOT FALSE AS stale,
           k.team_limited,
           ARRAY(SELECT t.team_id FROM api_key_team t WHERE t.api_key_id = k.id) AS team_ids,
           o.id AS org_id, o.on_track_gap, o.at_risk_gap, o.check_in_cadence_days, o.event_seq
    FROM api_key k JOIN organization o ON o.id = k.organization_id
    WHERE k.key_hash = :hash AND k.revoked_at IS NULL
    """
)
# At most one write a minute per key, whatever the traffic and the number of replicas.
_KEY_USED = text(
    "UPDATE api_key SET last_used_at = now() WHERE id = :id "
    "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
)
_MAX_ID = 2**63 - 1  # ids are BIGINT


def claim_id(claims: dict, name: str) -> int:
    """An id claim as a positive BIGINT: ASCII digits or a JSON integer, nothing else."""
    value = claims[name]
    if isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise Unauthenticated(f"invalid token: the {name!r} claim is not an id")
    if not 1 <= number <= _MAX_ID:
        raise Unauthenticated(f"invalid token: the {name!r} claim is not an id")
    return number


def _expiry(claims: dict) -> float | None:
    """The instant the token ends, as PyJWT read it when it checked it: a number, or a
    string of digits (which PyJWT accepts too, so a socket's timer must as well)."""
    exp = claims.get("exp")
    if exp is None or isinstance(exp, bool):
        return None
    try:
        return float(int(exp)) if isinstance(exp, str) else float(exp)
    except (TypeError, ValueError, OverflowError):
        return None


async def authenticate(conn: AsyncConnection, token: str, secret: str) -> Principal:
    """Our own tokens: API keys and HS256 JWTs."""
    if token.startswith(API_KEY_PREFIX):
        row = (await conn.execute(_API_KEY, {"hash": hash_api_key(token)})).one_or_none()
        if row is None:
            raise Unauthenticated("unknown or revoked API key")
        if row.stale:  # at most once a minute per key
            await conn.execute(_KEY_USED, {"id": row.id})
            await conn.commit()
        return Principal(
            organization_id=row.org_id,
            role="SERVICE",
            api_key_id=row.id,
            # A key limited to teams acts as a member of them would (service/access.py);
            # `team_limited` is not NULL, and a limited key without teams sees only PUBLIC.
            team_ids=frozenset(row.team_ids or ()) if row.team_limited else frozenset(),
            limited_to_teams=row.team_limited is not False,
            on_track_gap=row.on_track_gap,
            at_risk_gap=row.at_risk_gap,
            check_in_cadence_days=row.check_in_cadence_days,
            event_seq=row.event_seq,
        )
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "org", "exp"]}
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    user_id, org_id = claim_id(claims, "sub"), claim_id(claims, "org")
    principal = await user_principal(conn, user_id, org_id)
    return replace(principal, expires_at=_expiry(claims))


async def user_principal(conn: AsyncConnection, user_id: int, org_id: int) -> Principal:
    row = (await conn.execute(_USER, {"user_id": user_id, "org_id": org_id})).one_or_none()
    if row is None:
        raise Unauthenticated("the token names no user of this organization")
    if not row.active:
        raise Unauthenticated("this user has been deactivated")
    return Principal(
        organization_id=row.org_id,
        role=row.role,
        user_id=row.id,
        team_ids=frozenset(row.team_ids),
        on_track_gap=row.on_track_gap,
        at_risk_gap=row.at_risk_gap,
        check_in_cadence_days=row.check_in_cadence_days,
        event_seq=row.event_seq,
    )


# A WebSocket's connection_init may use a principal read this long ago (per process).
CACHE_SECONDS = 1.5
CACHE_ENTRIES = 10_000
# At most this many authentication reads hold pooled connections at once; the others
# queue for a turn. A turn that finds the pool starved (requests hold every connection)
# waits again while the database is known to be healthy, up to AUTH_WAIT_SECONDS in all,
# rather than being refused: a real outage still fails at once (1013 on a socket).
AUTH_CONNECTIONS = 8
AUTH_WAIT_SECONDS = 30.0


def token_digest(token: str) -> bytes:
    """What the cache is keyed by: never the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(slots=True)
class _Entry:
    principal: Principal
    at: float  # time.monotonic() when it was read


class PrincipalCache:
    """The principals of recently seen credentials, for a short time, bounded (LRU).

    An entry is dropped when it is older than `ttl`, when its token expires, and as soon
    as this process hears of any committed event of its organization after the one the
    principal was read at (`notice`, called by the EventHub for every NOTIFY, before it
    reads the rows): revoked keys, deactivated users and removed memberships are such
    events. While the hub has no listener (`listening` false) nothing is cached or used,
    since a notification could be missed."""

    def __init__(self, ttl: float = CACHE_SECONDS, size: int = CACHE_ENTRIES) -> None:
        self.ttl = ttl
        self.size = size
        self.entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.by_org: dict[int, set[bytes]] = {}
        self.seen: dict[int, int] = {}  # the latest event sequence heard of, per organization
        self.listening: Any = lambda: True
        self.hits = 0
        self.misses = 0

    def get(self, digest: bytes) -> Principal | None:
        entry = self.entries.get(digest)
        if entry is None:
            return None
        p = entry.principal
        if (
            time.monotonic() - entry.at > self.ttl
            or (p.expires_at is not None and p.expires_at <= time.time())
            or not self.listening()
        ):
            self._drop(digest)
            return None
        self.entries.move_to_end(digest)
        return p

    def put(self, digest: bytes, principal: Principal, read_at: float) -> None:
        org = principal.organization_id
        if not self.listening() or principal.event_seq < self.seen.get(org, 0):
            return  # read before an event this process has heard of: not kept
        self._drop(digest)
        self.entries[digest] = _Entry(principal, read_at)
        self.by_org.setdefault(org, set()).add(digest)
        while len(self.entries) > self.size:
            self._drop(next(iter(self.entries)))

    def notice(self, org: int | None, seq: int) -> None:
        """An event `seq` of organization `org` was committed (None: notifications may
        have been missed, so forget everything)."""
        if org is None:
            self.entries.clear()
            self.by_org.clear()
            self.seen.clear()
            return
        if seq > self.seen.get(org, 0):
            self.seen[org] = seq
        for digest in list(self.by_org.get(org, ())):
            entry = self.entries.get(digest)
            if entry is None or entry.principal.event_seq < seq:
                self._drop(digest)

    def _drop(self, digest: bytes) -> None:
        entry = self.entries.pop(digest, None)
        if entry is not None:
            digests = self.by_org.get(entry.principal.organization_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    self.by_org.pop(entry.principal.organization_id, None)


class Authenticator:
    """Every kind of bearer token the service takes: API keys, its own HS256 JWTs, and
    (when configured) RS256/ES256 JWTs of the company's identity provider, verified
    against a public key or a JWKS document, with issuer, audience and expiry.

    A lookup is one statement on an autocommit connection (no BEGIN, no ROLLBACK),
    behind a queue of AUTH_CONNECTIONS turns, so a burst of connections waits its turn
    instead of failing on the pool's timeout. `authenticate(token, cached=True)` (a
    WebSocket's connection_init) may answer from the PrincipalCache, and concurrent
    lookups of one token share one read."""

    def __init__(self, settings, db) -> None:
        self.settings = settings
        self.db = db
        pool = db.engine.pool
        capacity = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
        self._slots = asyncio.Semaphore(max(1, min(AUTH_CONNECTIONS, capacity)))
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.cache = PrincipalCache()
        # Whether the database is known to be answering (the replica's event listener);
        # only then is a starved pool waited for again.
        self.healthy: Callable[[], bool] = lambda: False
        self._inflight: dict[bytes, asyncio.Future[Principal]] = {}
        self.lookups = 0  # reads of the database, for tests
        self.secret = settings.resolved_jwt_secret()
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None
        )
        self._public_key = _load_key(settings.jwt_public_key) if settings.jwt_public_key else None

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        """An autocommit pooled connection, waited for in turn (see AUTH_CONNECTIONS)."""
        deadline = time.monotonic() + AUTH_WAIT_SECONDS
        try:
            await asyncio.wait_for(self._slots.acquire(), AUTH_WAIT_SECONDS)
        except TimeoutError:
            raise DatabaseUnavailable(
                f"no database connection for authentication within {AUTH_WAIT_SECONDS:.0f} s"
            ) from None
        try:
            async with AsyncExitStack() as stack:
                while True:
                    try:
                        conn = await stack.enter_async_context(self._engine.connect())
                        break
                    except sa_exc.TimeoutError:  # the pool is starved, not the database
                        if not self.healthy() or time.monotonic() >= deadline:
                            raise
                self.lookups += 1
                yield conn
        finally:
            self._slots.release()

    async def authenticate(self, token: str, *, cached: bool = False) -> Principal:
        if not cached:
            return await self._authenticate(token)
        digest = token_digest(token)
        principal = self.cache.get(digest)
        if principal is not None:
            self.cache.hits += 1
            return principal
        waiting = self._inflight.get(digest)
        if waiting is not None:
            self.cache.hits += 1
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not waiting.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await self._authenticate(token)  # the first caller went away
        self.cache.misses += 1
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        read_at = time.monotonic()
        try:
            principal = await self._authenticate(token)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        else:
            future.set_result(principal)
            self.cache.put(digest, principal, read_at)
            return principal
        finally:
            self._inflight.pop(digest, None)

    async def _authenticate(self, token: str) -> Principal:
        alg = None
        if not token.startswith(API_KEY_PREFIX):
            try:
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from None
        if alg in (None, "HS256") or not self.settings.external_tokens:
            async with self._connect() as conn:
                return await authenticate(conn, token, self.secret)
        if alg not in self.settings.jwt_algorithms:
            raise Unauthenticated(f"tokens signed with {alg} are not accepted")
        return await self._external(token, alg)

    async def _external(self, token: str, alg: str) -> Principal:
        s = self.settings
        try:
            if self._jwks is not None:
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            else:
                key = self._public_key
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": s.jwt_audience is not None,
                    "verify_iss": s.jwt_issuer is not None,
                },
            )
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        slug = claims.get(s.jwt_org_claim) or s.jwt_default_org
        email = claims.get("email") or (claims["sub"] if "@" in str(claims["sub"]) else None)
        if not slug or not email:
            raise Unauthenticated("the token names no organization or no email")
        if not isinstance(slug, str) or not isinstance(email, str):
            raise Unauthenticated(
                f"invalid token: the {s.jwt_org_claim!r} and email claims must be strings"
            )
        email = str(email).strip().lower()
        async with self._connect() as conn:
            found = (await conn.execute(_BY_EMAIL, {"slug": slug, "email": email})).one_or_none()
            if found is not None and found.user_id is not None:
                principal = await user_principal(conn, found.user_id, found.org_id)
                return replace(principal, expires_at=_expiry(claims))
        if found is None:
            raise Unauthenticated("the token names an unknown organization")
        if not s.jwt_create_users:
            raise Unauthenticated("the token names no user of this organization")

        user = await self.db.transaction(
            lambda session: create_user_from_identity(
                session, found.org_id, email, str(claims.get("name") or email.split("@")[0])
            )
        )
        async with self._connect() as conn:
            principal = await user_principal(conn, user.id, found.org_id)
        return replace(principal, expires_at=_expiry(claims))


_BY_EMAIL = text(
    "SELECT o.id AS org_id, u.id AS user_id FROM organization o "
    "LEFT JOIN app_user u ON u.organization_id = o.id AND u.email = :email "
    "WHERE o.slug = :slug"
)


def _load_key(value: str) -> str:
    if "-----BEGIN" in value:
        return value
    with open(value) as f:
        return f.read()
