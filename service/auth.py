"""Who is calling: a user (JWT) or a service (API key), inside one organization.

The principal carries what access checks need (role, teams, the organization's
status bounds and cadence), loaded with one statement per request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.errors import Unauthenticated

API_KEY_PREFIX = "okr_"


@dataclass(frozen=True)
class Principal:
    organization_id: int
    role: str  # ADMIN, MEMBER, VIEWER or SERVICE
    user_id: int | None = None
    api_key_id: int | None = None
    team_ids: frozenset[int] = field(default_factory=frozenset)
    on_track_gap: float = 0.10
    at_risk_gap: float = 0.25
    check_in_cadence_days: int = 7

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"


def issue_token(secret: str, user_id: int, organization_id: int, ttl_days: int = 30) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "org": str(organization_id),
        "iat": now,
        "exp": now + timedelta(days=ttl_days),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def new_api_key() -> tuple[str, str]:
    """A fresh key (shown once) and the hash that is stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(header: str | None) -> str:
    if not header:
        raise Unauthenticated("an Authorization: Bearer token is required")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


_USER = text(
    """
    SELECT u.id, u.role, o.id AS org_id, o.on_track_gap, o.at_risk_gap, o.check_in_cadence_days,
           ARRAY(SELECT m.team_id FROM team_membership m WHERE m.user_id = u.id) AS team_ids
    FROM app_user u JOIN organization o ON o.id = u.organization_id
    WHERE u.id = :user_id AND u.organization_id = :org_id
    """
)
_API_KEY = text(
    """
    SELECT k.id, o.id AS org_id, o.on_track_gap, o.at_risk_gap, o.check_in_cadence_days
    FROM api_key k JOIN organization o ON o.id = k.organization_id
    WHERE k.key_hash = :hash AND k.revoked_at IS NULL
    """
)


async def authenticate(conn: AsyncConnection, token: str, secret: str) -> Principal:
    if token.startswith(API_KEY_PREFIX):
        row = (await conn.execute(_API_KEY, {"hash": hash_api_key(token)})).one_or_none()
        if row is None:
            raise Unauthenticated("unknown or revoked API key")
        return Principal(
            organization_id=row.org_id,
            role="SERVICE",
            api_key_id=row.id,
            on_track_gap=row.on_track_gap,
            at_risk_gap=row.at_risk_gap,
            check_in_cadence_days=row.check_in_cadence_days,
        )
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "org", "exp"]}
        )
        user_id, org_id = int(claims["sub"]), int(claims["org"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    row = (await conn.execute(_USER, {"user_id": user_id, "org_id": org_id})).one_or_none()
    if row is None:
        raise Unauthenticated("the token names no user of this organization")
    return Principal(
        organization_id=row.org_id,
        role=row.role,
        user_id=row.id,
        team_ids=frozenset(row.team_ids),
        on_track_gap=row.on_track_gap,
        at_risk_gap=row.at_risk_gap,
        check_in_cadence_days=row.check_in_cadence_days,
    )
