"""Who is calling, as the use cases and reads see it: a user or a service (API key)
inside one organization, with what access checks need (role, teams, the
organization's status bounds and cadence). How a principal is authenticated (JWT,
API keys) lives in service/auth.py, above the use cases; nothing here does I/O."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    organization_id: int
    role: str  # ADMIN, MEMBER, VIEWER or SERVICE
    user_id: int | None = None
    api_key_id: int | None = None
    team_ids: frozenset[int] = field(default_factory=frozenset)
    # An API key limited to teams (`okr apikey create --team`): `team_ids` are its teams,
    # and it reads and writes only what a member of them could.
    limited_to_teams: bool = False
    on_track_gap: float = 0.10
    at_risk_gap: float = 0.25
    check_in_cadence_days: int = 7
    # The organization's outbox position when the request was authenticated: every
    # committed write moves it, so it keys the response cache.
    event_seq: int = 0
    # A JWT's expiry (seconds since the epoch): an open WebSocket is closed then.
    expires_at: float | None = None

    @property
    def thresholds(self) -> tuple[float, float]:
        """The organization's status bounds: (on-track gap, at-risk gap)."""
        return (self.on_track_gap, self.at_risk_gap)

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"

    @property
    def is_trusted_service(self) -> bool:
        """A SERVICE key trusted for its whole organization (not limited to teams)."""
        return self.role == "SERVICE" and not self.limited_to_teams
