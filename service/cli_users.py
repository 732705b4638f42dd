"""`okr user`: what an operator scripts about people (role, reactivate, anonymize).

Each runs the same use case as its mutation (updateUser, reactivateUser, anonymizeUser),
as the organization's operator: an ADMIN principal with no user (whoever can run `okr`
against the database is trusted as an admin is). Its events have no actor. The rules
hold as over the API: the last active admin is not demoted, an anonymized person is
not brought back. Exit 0 when done, 1 when refused."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from service.cli_support import acting_for, prepare, run
from service.domain.enums import Role
from service.domain.principal import Principal
from service.models import User, pk_of
from service.settings import Settings


def _operate(
    args: argparse.Namespace,
    settings: Settings,
    act: Callable[[Any, Principal, User], Awaitable[User]],
) -> User:
    from service.usecases import organizations

    url = prepare(settings)

    async def work(s: Any) -> User:
        org = await organizations.organization_by_slug(s, args.org)
        target = await organizations.user_by_email(s, pk_of(org), args.email)
        return await act(s, acting_for(org), target)

    return run(url, lambda db: db.transaction(work))


def cmd_user_role(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import commands, people

    role = Role(args.role)
    row = _operate(
        args,
        settings,
        lambda s, p, target: people.update_user(
            s, p, commands.UpdateUser(pk_of(target), role=role)
        ),
    )
    print(f"{row.email} is now {row.role}")
    return 0


def cmd_user_reactivate(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import commands, people

    row = _operate(
        args,
        settings,
        lambda s, p, target: people.reactivate_user(s, p, commands.UserId(pk_of(target))),
    )
    print(f"{row.email} is active")
    return 0


def cmd_user_anonymize(args: argparse.Namespace, settings: Settings) -> int:
    from service.usecases import commands, people

    if not args.yes:
        print(
            f"okr: anonymizing {args.email} cannot be undone; run again with --yes",
            file=sys.stderr,
        )
        return 2
    row = _operate(
        args,
        settings,
        lambda s, p, target: people.anonymize_user(s, p, commands.UserId(pk_of(target))),
    )
    print(f"user {row.id} is anonymized (now {row.email}); this cannot be undone")
    return 0


def add_parsers(sub: Any) -> None:
    """`okr user ...`, under the command's subparsers."""
    user = sub.add_parser("user", help="people: role, reactivate, anonymize").add_subparsers(
        dest="user_command", required=True
    )
    role = user.add_parser("role", help="change a person's role (updateUser)")
    role.add_argument("--org", required=True, help="the organization's slug")
    role.add_argument("email")
    role.add_argument("role", choices=["ADMIN", "MEMBER", "VIEWER"])
    role.set_defaults(func=cmd_user_role)
    reactivate = user.add_parser("reactivate", help="bring back a deactivated person")
    reactivate.add_argument("--org", required=True, help="the organization's slug")
    reactivate.add_argument("email")
    reactivate.set_defaults(func=cmd_user_reactivate)
    anonymize = user.add_parser(
        "anonymize", help="erase a person's name and email, for good (anonymizeUser)"
    )
    anonymize.add_argument("--org", required=True, help="the organization's slug")
    anonymize.add_argument("email")
    anonymize.add_argument("--yes", action="store_true", help="yes: it cannot be undone")
    anonymize.set_defaults(func=cmd_user_anonymize)
