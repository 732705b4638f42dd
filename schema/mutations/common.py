"""The mutation funnel. Every Mutation resolver goes one way: its input builds a typed
command (ids decoded, enums the domain's; `command()` on each input), `mutate` runs the
use case with it in one transaction, and the payload either shows the result or, for a
`Rejected`, holds it as `userErrors` after the rollback: a refused mutation changes
nothing. Every payload implements `Payload`.

A write may take a row out of its caller's sight (made PRIVATE, given to another
owner): the payload then holds null, never the hidden row (`shown_objective`,
`shown_key_result`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import strawberry
from strawberry import ID, UNSET

from schema import ids
from schema.context import Info
from schema.types.common import UserError
from schema.types.key_result import KeyResult
from schema.types.objective import Objective
from service import clock
from service.domain.errors import ErrorCode, Rejected
from service.domain.principal import Principal
from service.reads.visibility import can_see_objective
from service.usecases.commands import KEEP, Keep

if TYPE_CHECKING:  # the use cases' session, for the signature only
    from sqlalchemy.ext.asyncio import AsyncSession

C = TypeVar("C")
R = TypeVar("R")
T = TypeVar("T")
R_contra = TypeVar("R_contra", contravariant=True)
P_co = TypeVar("P_co", covariant=True)
P = TypeVar("P")
V = TypeVar("V")


def gid(value: ID | None, type_name: str, field: str) -> int | None:
    """A global id of `type_name` as its row id (None stays None); a bad one is INVALID."""
    if value is None or value is UNSET:
        return None
    try:
        return ids.decode_as(value, type_name)
    except ids.BadId as exc:
        raise Rejected(ErrorCode.INVALID, f"{field}: {exc}", [field]) from None


def required_gid(value: ID, type_name: str, field: str) -> int:
    pk = gid(value, type_name, field)
    assert pk is not None
    return pk


def keep(value: T) -> T | Keep:
    """An update's field: KEEP when the caller left it out (null is a value sent)."""
    return KEEP if value is UNSET else value


def keep_as(value: T | None, convert: Callable[[T], V]) -> V | Keep | None:
    """An update's field converted (a global id decoded, an enum made the domain's):
    KEEP when left out, None when null was sent."""
    if value is UNSET:
        return KEEP
    return None if value is None else convert(value)


@strawberry.interface(
    description="What every mutation's payload holds: the errors the caller can fix. When "
    "there are any, nothing was written."
)
class Payload:
    user_errors: list[UserError] = strawberry.field(default_factory=list)

    @classmethod
    def refused(cls, exc: Rejected) -> Self:
        """A refusal (or a batch's several, `errors`) as this payload's userErrors."""
        return cls(user_errors=[UserError.of(e) for e in getattr(exc, "errors", [exc])])


class Shapes(Protocol[R_contra, P_co]):
    """A payload class: how it shows a use case's result, and how it shows a refusal."""

    def refused(self, exc: Rejected) -> P_co: ...

    async def of(self, info: Info, result: R_contra) -> P_co: ...


async def mutate(
    info: Info,
    command: Callable[[], C],
    usecase: Callable[[AsyncSession, Principal, C], Awaitable[R]],
    payload: Shapes[R, P],
) -> P:
    """The one way a mutation runs: build the command, run the use case in one
    transaction, shape the payload; a `Rejected` from either step is the payload's
    userErrors (the transaction rolled back). It reads the clock once: what it writes and
    the payload's derived facts share that instant (service/clock.py)."""
    principal = info.context.principal
    with clock.held(clock.now()) as instant:
        try:
            cmd = command()
            result = await info.context.db.transaction(lambda s: usecase(s, principal, cmd))
        except Rejected as exc:
            return payload.refused(exc)
        info.context.authenticate_as(principal)  # fresh loaders see the change
        info.context.now = instant
        shaped = await payload.of(info, result)
    # Committed: should the response be cut off (DEADLINE_EXCEEDED, schema/budget.py),
    # the error still says what was written, so that a retry is not a second write.
    info.context.written[str(info.path.key)] = written_ids(shaped)
    return shaped


def written_ids(payload: object) -> list[str]:
    """The global ids a payload shows (its entities, and the items of its lists)."""
    found: list[str] = []
    for value in vars(payload).values():
        for item in value if isinstance(value, list) else [value]:
            node_id = getattr(item, "id", None)
            if isinstance(node_id, str) and not isinstance(item, UserError):
                found.append(node_id)
    return found


def shown_objective(info: Info, row: Any) -> Objective | None:
    """The changed objective, as its caller may now see it (or None)."""
    if row is None or not can_see_objective(
        info.context.principal, row.visibility, row.team_id, row.owner_id
    ):
        return None
    return Objective.of(row)


async def shown_key_result(info: Info, row: Any) -> KeyResult | None:
    """The key result, when the caller may still see its objective (see above)."""
    if row is None:
        return None
    objective = await info.context.loaders.objective(row.objective_id)
    return KeyResult.of(row, objective) if objective is not None else None
