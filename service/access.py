"""Who may see and change what (docs/design.md, "Access").

ADMIN: everything in the organization. MEMBER: create objectives for their teams
and for themselves, edit what they own and their teams' objectives that they can
see, check in on those key results. VIEWER: read. SERVICE: read, and check in on
any key result of its organization (it is trusted for its organization); a key limited
to teams reads and writes only what a member of those teams could: it checks in on the
key results of its teams' objectives that it can see, and records no measurements
(members do not). Editing always requires seeing. A weight other than 1
under a parent needs the right to edit that parent.
Visibility PUBLIC: the organization; TEAM: that team's members and admins;
PRIVATE: the owner and admins.
"""

from __future__ import annotations

from service.domain.errors import forbidden
from service.domain.principal import Principal
from service.reads.visibility import can_see_objective


def can_edit_objective(
    p: Principal, visibility: str, team_id: int | None, owner_id: int | None
) -> bool:
    """Editing requires seeing: a teammate may not edit a PRIVATE objective of another's."""
    if p.is_admin:
        return True
    if p.role != "MEMBER" or not can_see_objective(p, visibility, team_id, owner_id):
        return False
    if p.user_id is not None and owner_id == p.user_id:
        return True
    return team_id is not None and team_id in p.team_ids


def require_admin(p: Principal) -> None:
    if not p.is_admin:
        raise forbidden("only an organization admin may do this")


def require_create_objective(p: Principal, team_id: int | None, owner_id: int | None) -> None:
    if p.is_admin:
        return
    if p.role != "MEMBER" or p.user_id is None:
        raise forbidden(f"a {p.role} may not create objectives")
    if team_id is not None and team_id not in p.team_ids:
        raise forbidden("members create objectives for their own teams", "teamId")
    if team_id is None and owner_id != p.user_id:
        raise forbidden("members create personal objectives for themselves only", "ownerId")


def require_edit_objective(
    p: Principal, visibility: str, team_id: int | None, owner_id: int | None
) -> None:
    if not can_edit_objective(p, visibility, team_id, owner_id):
        raise forbidden("you may not change this objective")


def require_weight_under(
    p: Principal, weight: float, visibility: str, team_id: int | None, owner_id: int | None
) -> None:
    """Aligning under any visible objective is open, but a weight other than 1 under a
    parent moves that parent's number: it needs the right to edit the parent."""
    if weight != 1 and not can_edit_objective(p, visibility, team_id, owner_id):
        raise forbidden(
            "a weight other than 1 needs the right to edit the objective it counts towards",
            "weight",
        )


def require_check_in(
    p: Principal,
    visibility: str,
    team_id: int | None,
    objective_owner: int | None,
    key_result_owner: int | None,
) -> None:
    if p.is_trusted_service:
        return  # any key result of its organization, as docs/design.md says
    if not can_see_objective(p, visibility, team_id, objective_owner):
        raise forbidden("you may not check in on this key result")
    if can_edit_objective(p, visibility, team_id, objective_owner):
        return
    if p.limited_to_teams and team_id is not None and team_id in p.team_ids:
        return  # what a member of its teams could: their objectives' key results
    if p.role == "MEMBER" and p.user_id is not None and key_result_owner == p.user_id:
        return
    raise forbidden("you may not check in on this key result")


def require_record_measurements(p: Principal) -> None:
    """Metrics are posted by the systems that own the numbers (SERVICE) and by admins."""
    if p.role not in ("ADMIN", "SERVICE"):
        raise forbidden(f"a {p.role} may not record measurements", "measurements")
    if p.limited_to_teams:
        raise forbidden(
            "an API key limited to teams may not record measurements (a member of its "
            "teams could not); check in on its teams' key results instead",
            "measurements",
        )


def require_comment(p: Principal) -> None:
    if p.role not in ("ADMIN", "MEMBER"):
        raise forbidden(f"a {p.role} may not comment")
