"""Who may see and change what (DESIGN.md, "Access").

ADMIN: everything in the organization. MEMBER: create objectives for their teams
and for themselves, edit what they own and their teams' objectives, check in on
those key results. VIEWER: read. SERVICE: read, and check in on any key result.
Visibility PUBLIC: the organization; TEAM: that team's members and admins;
PRIVATE: the owner and admins.
"""

from __future__ import annotations

from service.auth import Principal
from service.errors import forbidden


def can_edit_objective(p: Principal, team_id: int | None, owner_id: int | None) -> bool:
    if p.is_admin:
        return True
    if p.role != "MEMBER":
        return False
    return owner_id == p.user_id or (team_id is not None and team_id in p.team_ids)


def require_admin(p: Principal) -> None:
    if not p.is_admin:
        raise forbidden("only an organization admin may do this")


def require_create_objective(p: Principal, team_id: int | None, owner_id: int | None) -> None:
    if p.is_admin:
        return
    if p.role != "MEMBER":
        raise forbidden(f"a {p.role} may not create objectives")
    if team_id is not None and team_id not in p.team_ids:
        raise forbidden("members create objectives for their own teams", "teamId")
    if team_id is None and owner_id != p.user_id:
        raise forbidden("members create personal objectives for themselves only", "ownerId")


def require_edit_objective(p: Principal, team_id: int | None, owner_id: int | None) -> None:
    if not can_edit_objective(p, team_id, owner_id):
        raise forbidden("you may not change this objective")


def require_check_in(
    p: Principal, team_id: int | None, objective_owner: int | None, key_result_owner: int | None
) -> None:
    if p.role == "SERVICE" or can_edit_objective(p, team_id, objective_owner):
        return
    if p.role == "MEMBER" and key_result_owner == p.user_id:
        return
    raise forbidden("you may not check in on this key result")


def require_comment(p: Principal) -> None:
    if p.role not in ("ADMIN", "MEMBER"):
        raise forbidden(f"a {p.role} may not comment")
