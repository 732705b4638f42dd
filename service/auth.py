"""Who is calling: a user (JWT) or a service (API key), inside one organization.

The principal carries what access checks need (role, teams, the organization's
status bounds and cadence), loaded with one statement per request.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.credentials import API_KEY_PREFIX, hash_api_key
from service.domain.errors import Unauthenticated
from service.domain.principal import Principal
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
    return token.strip()


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
    if isinstance(exp, bool):
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
        if row.stale:
            await conn.execute(_KEY_USED, {"id": row.id})
            await conn.commit()
        return Principal(
            organization_id=row.org_id,
            role="SERVICE",
            api_key_id=row.id,
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


class Authenticator:
    """Every kind of bearer token the service takes: API keys, its own HS256 JWTs, and
    (when configured) RS256/ES256 JWTs of the company's identity provider, verified
    against a public key or a JWKS document, with issuer, audience and expiry."""

    def __init__(self, settings, db) -> None:
        self.settings = settings
        self.db = db
        self.secret = settings.resolved_jwt_secret()
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None
        )
        self._public_key = _load_key(settings.jwt_public_key) if settings.jwt_public_key else None

    async def authenticate(self, token: str) -> Principal:
        alg = None
        if not token.startswith(API_KEY_PREFIX):
            try:
                alg = jwt.get_unverified_header(token).get("alg")
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from None
        if alg in (None, "HS256") or not self.settings.external_tokens:
            async with self.db.connect() as conn:
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
        email = str(email).strip().lower()
        async with self.db.connect() as conn:
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
        async with self.db.connect() as conn:
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
