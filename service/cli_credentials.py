"""`okr token` and `okr apikey`: the credentials an operator hands out.

A token is a user's JWT (for a person trying the API); an API key is a SERVICE
principal's (for the other services that check in), shown once and stored hashed. Both
run against the database as its operator (whoever can run `okr` is trusted as an admin
is). Exit 0 when done, 1 when refused."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC
from typing import Any

from service.auth import issue_token
from service.cli_support import prepare as _prepare
from service.cli_support import run as _run
from service.db import Database
from service.domain.errors import ErrorCode, Rejected
from service.models import pk_of
from service.settings import Settings


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations

    url = _prepare(settings)

    async def find(db: Database):
        async with db.sessions() as s:
            org = await organizations.organization_by_slug(s, args.org)
            user = await organizations.user_by_email(s, pk_of(org), args.email)
            if not user.active:
                raise Rejected(ErrorCode.FORBIDDEN, f"{user.email} has been deactivated")
            return org.id, user.id

    org_id, user_id = _run(url, find)
    print(issue_token(settings.resolved_jwt_secret(), user_id, org_id, settings.jwt_ttl_days))
    return 0


def cmd_apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations

    url = _prepare(settings)

    async def create(db: Database):
        async def work(s):
            org = await organizations.organization_by_slug(s, args.org)
            return await organizations.create_api_key(s, pk_of(org), args.name, args.team)

        return await db.transaction(work)

    _row, key = _run(url, create)
    print("Store this key now; it is not shown again.", file=sys.stderr)
    print(key)
    return 0


def cmd_apikey_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations

    url = _prepare(settings)

    async def revoke(db: Database):
        async def work(s):
            org = await organizations.organization_by_slug(s, args.org)
            return await organizations.revoke_api_key(s, pk_of(org), args.name)

        return await db.transaction(work)

    print(f"revoked {_run(url, revoke)} key(s)")
    return 0


def cmd_apikey_list(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import organizations

    url = _prepare(settings)

    async def keys(db: Database):
        async with db.sessions() as s:
            org = await organizations.organization_by_slug(s, args.org)
            return await organizations.api_keys(s, pk_of(org))

    def when(value) -> str:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"

    rows = [("NAME", "CREATED", "LAST USED", "REVOKED")]
    rows += [
        (
            k.name,
            when(k.created_at),
            when(k.last_used_at) if k.last_used_at else "never",
            when(k.revoked_at),
        )
        for k in _run(url, keys)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
        print("  ".join([*cells, row[3]]))
    return 0


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="print a token for an existing user")
    token.add_argument("--org", required=True, help="organization slug")
    token.add_argument("--email", required=True)
    token.set_defaults(func=cmd_token)

    apikey = sub.add_parser("apikey", help="service API keys").add_subparsers(
        dest="apikey_command", required=True
    )
    ak_create = apikey.add_parser(
        "create",
        help="print a new SERVICE key, once",
        description="A SERVICE key reads what any member may and checks in on any key "
        "result of its organization; with --team, only what a member of those teams could.",
    )
    ak_create.add_argument("--org", required=True)
    ak_create.add_argument("--name", required=True)
    ak_create.add_argument(
        "--team",
        action="append",
        default=[],
        metavar="NAME",
        help="limit the key to this team (repeat for several): it then reads and writes "
        "only what a member of those teams could",
    )
    ak_create.set_defaults(func=cmd_apikey_create)
    ak_revoke = apikey.add_parser("revoke", help="revoke the keys of that name")
    ak_revoke.add_argument("--org", required=True)
    ak_revoke.add_argument("--name", required=True)
    ak_revoke.set_defaults(func=cmd_apikey_revoke)
    ak_list = apikey.add_parser(
        "list", help="the organization's keys: name, created, last used, revoked"
    )
    ak_list.add_argument("--org", required=True)
    ak_list.set_defaults(func=cmd_apikey_list)
