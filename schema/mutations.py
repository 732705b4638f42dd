"""The Mutation root. Each resolver decodes its input, runs one use case in one
transaction, and shapes the payload; a `Rejected` becomes `userErrors` after the
rollback, so a rejected mutation changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any, TypeVar

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry import ID, UNSET

from schema import ids, metrics
from schema.context import Info
from schema.enums import CycleStatus, KeyResultType, Measure, Role, Visibility
from schema.types.check_in import CheckIn
from schema.types.comment import Comment
from schema.types.common import UserError
from schema.types.cycle import Cycle
from schema.types.key_result import KeyResult
from schema.types.objective import Objective
from schema.types.organization import User
from schema.types.team import Team
from service.domain.errors import ErrorCode, Rejected
from service.reads.visibility import can_see_objective
from service.usecases import (
    comments,
    cycles,
    key_results,
    objectives,
    organizations,
    reviews,
)
from service.usecases import metrics as metric_usecases

R = TypeVar("R")


def gid(value: ID | None, type_name: str, field: str) -> int | None:
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


async def run(info: Info, work: Callable[[AsyncSession], Awaitable[R]]) -> R:
    result = await info.context.db.transaction(work)
    info.context.authenticate_as(info.context.principal)  # fresh loaders see the change
    return result


def shown_objective(info: Info, row: Any) -> Objective | None:
    """The changed objective, as its caller may now see it: a write can take an objective
    out of the caller's sight (made PRIVATE, given to another owner), and the payload
    then holds null, never the hidden row."""
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


def changes_of(inp: Any, mapping: dict[str, str]) -> dict[str, Any]:
    """Only the fields the caller sent (null included), under the use case's names."""
    out = {}
    for attr, key in mapping.items():
        value = getattr(inp, attr)
        if value is not UNSET:
            out[key] = value.value if hasattr(value, "value") else value
    return out


# --- inputs ---------------------------------------------------------------------------------


@strawberry.input
class CreateTeamInput:
    name: str
    parent_id: ID | None = None


@strawberry.input
class AddTeamMemberInput:
    team_id: ID
    user_id: ID


@strawberry.input
class RemoveTeamMemberInput:
    team_id: ID
    user_id: ID


@strawberry.input
class DeactivateUserInput:
    user_id: ID


@strawberry.input
class CreateUserInput:
    name: str
    email: str
    role: Role = Role.MEMBER


@strawberry.input
class CreateCycleInput:
    name: str
    starts_on: date
    ends_on: date


@strawberry.input
class SetCycleStatusInput:
    cycle_id: ID
    status: CycleStatus


@strawberry.input
class CreateObjectiveInput:
    cycle_id: ID
    title: str
    description: str | None = None
    team_id: ID | None = None
    owner_id: ID | None = strawberry.field(
        default=None, description="Defaults to the caller: every objective has an owner."
    )
    parent_id: ID | None = None
    weight: float = 1.0
    visibility: Visibility = Visibility.PUBLIC


@strawberry.input
class UpdateObjectiveInput:
    objective_id: ID
    expected_version: int | None = None
    title: str | None = UNSET
    description: str | None = UNSET
    owner_id: ID | None = UNSET
    weight: float | None = UNSET
    visibility: Visibility | None = UNSET


@strawberry.input
class AlignObjectiveInput:
    objective_id: ID
    parent_id: ID | None = strawberry.field(default=None, description="null unaligns.")


@strawberry.input
class ArchiveObjectiveInput:
    objective_id: ID


@strawberry.input
class CreateKeyResultInput:
    objective_id: ID
    title: str
    type: KeyResultType
    measure: Measure = Measure.NUMBER
    unit: str | None = None
    start_value: float | None = strawberry.field(
        default=None, description="Required but for MILESTONE (0)."
    )
    target_value: float | None = strawberry.field(
        default=None, description="Required but for MILESTONE (1)."
    )
    weight: float = 1.0
    owner_id: ID | None = None


@strawberry.input
class UpdateKeyResultInput:
    key_result_id: ID
    expected_version: int | None = None
    title: str | None = UNSET
    owner_id: ID | None = UNSET
    measure: Measure | None = UNSET
    unit: str | None = UNSET
    start_value: float | None = UNSET
    target_value: float | None = UNSET
    weight: float | None = UNSET


@strawberry.input
class CheckInInput:
    key_result_id: ID
    value: float
    confidence: float | None = None
    note: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="The caller's own key, per key result: the same key with the same value "
        "and instant returns the first check-in; with another value or instant it is a "
        "CONFLICT.",
    )
    measured_at: datetime | None = strawberry.field(
        default=None,
        description="When the value was true: defaults to now; may be backdated inside the cycle.",
    )


@strawberry.input
class ScoreKeyResultInput:
    key_result_id: ID
    score: float
    reason: str | None = None


@strawberry.input
class ReflectInput:
    objective_id: ID
    went_well: str | None = UNSET
    challenges: str | None = UNSET
    lessons: str | None = UNSET


@strawberry.input
class AddCommentInput:
    subject_id: ID = strawberry.field(description="An objective or a key result.")
    body: str


@strawberry.input
class CarryOverObjectiveInput:
    objective_id: ID
    to_cycle_id: ID
    key_result_ids: list[ID] = strawberry.field(
        default_factory=list,
        description="The key results to carry; each starts from its last current value.",
    )


@strawberry.input
class SetCheckInCadenceInput:
    team_id: ID | None = strawberry.field(
        default=None, description="null: the organization's cadence."
    )
    days: int | None = strawberry.field(
        default=None, description="For a team, null falls back to the organization's."
    )


# --- payloads -------------------------------------------------------------------------------


@strawberry.type
class TeamPayload:
    team: Team | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UserPayload:
    user: User | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CyclePayload:
    cycle: Cycle | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ObjectivePayload:
    objective: Objective | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class KeyResultPayload:
    key_result: KeyResult | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CheckInPayload:
    check_in: CheckIn | None = None
    key_result: KeyResult | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CommentPayload:
    comment: Comment | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CarryOverPayload:
    objective: Objective | None = None
    carried_from: Objective | None = None
    key_results: list[KeyResult] = strawberry.field(default_factory=list)
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CheckInCadencePayload:
    team: Team | None = None
    days: int | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _refused(payload: type, exc: Rejected) -> Any:
    return payload(user_errors=[UserError.of(exc)])


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_team(self, info: Info, input: CreateTeamInput) -> TeamPayload:
        p = info.context.principal
        try:
            parent = gid(input.parent_id, "Team", "parentId")
            row = await run(info, lambda s: organizations.create_team(s, p, input.name, parent))
        except Rejected as exc:
            return _refused(TeamPayload, exc)
        return TeamPayload(team=Team.of(row))

    @strawberry.mutation
    async def add_team_member(self, info: Info, input: AddTeamMemberInput) -> TeamPayload:
        p = info.context.principal
        try:
            team = required_gid(input.team_id, "Team", "teamId")
            user = required_gid(input.user_id, "User", "userId")
            row = await run(info, lambda s: organizations.add_team_member(s, p, team, user))
        except Rejected as exc:
            return _refused(TeamPayload, exc)
        return TeamPayload(team=Team.of(row))

    @strawberry.mutation(description="ADMIN only.")
    async def remove_team_member(self, info: Info, input: RemoveTeamMemberInput) -> TeamPayload:
        p = info.context.principal
        try:
            team = required_gid(input.team_id, "Team", "teamId")
            user = required_gid(input.user_id, "User", "userId")
            row = await run(info, lambda s: organizations.remove_team_member(s, p, team, user))
        except Rejected as exc:
            return _refused(TeamPayload, exc)
        return TeamPayload(team=Team.of(row))

    @strawberry.mutation(
        description="ADMIN only. The user's tokens stop working at once, over HTTP and on "
        "open WebSockets; their history stays."
    )
    async def deactivate_user(self, info: Info, input: DeactivateUserInput) -> UserPayload:
        p = info.context.principal
        try:
            user = required_gid(input.user_id, "User", "userId")
            row = await run(info, lambda s: organizations.deactivate_user(s, p, user))
        except Rejected as exc:
            return _refused(UserPayload, exc)
        return UserPayload(user=User.of(row))

    @strawberry.mutation
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        p = info.context.principal
        try:
            row = await run(
                info,
                lambda s: organizations.create_user(
                    s, p, input.name, input.email, input.role.value
                ),
            )
        except Rejected as exc:
            return _refused(UserPayload, exc)
        return UserPayload(user=User.of(row))

    @strawberry.mutation
    async def create_cycle(self, info: Info, input: CreateCycleInput) -> CyclePayload:
        p = info.context.principal
        try:
            row = await run(
                info,
                lambda s: cycles.create_cycle(s, p, input.name, input.starts_on, input.ends_on),
            )
        except Rejected as exc:
            return _refused(CyclePayload, exc)
        return CyclePayload(cycle=Cycle.of(row))

    @strawberry.mutation
    async def set_cycle_status(self, info: Info, input: SetCycleStatusInput) -> CyclePayload:
        p = info.context.principal
        try:
            cycle = required_gid(input.cycle_id, "Cycle", "cycleId")
            row = await run(
                info, lambda s: cycles.set_cycle_status(s, p, cycle, str(input.status.value))
            )
        except Rejected as exc:
            return _refused(CyclePayload, exc)
        return CyclePayload(cycle=Cycle.of(row))

    @strawberry.mutation
    async def create_objective(self, info: Info, input: CreateObjectiveInput) -> ObjectivePayload:
        p = info.context.principal
        try:
            args = dict(
                cycle_id=required_gid(input.cycle_id, "Cycle", "cycleId"),
                team_id=gid(input.team_id, "Team", "teamId"),
                owner_id=gid(input.owner_id, "User", "ownerId"),
                parent_id=gid(input.parent_id, "Objective", "parentId"),
                title=input.title,
                description=input.description,
                weight=input.weight,
                visibility=input.visibility.value,
            )
            row = await run(info, lambda s: objectives.create_objective(s, p, **args))
        except Rejected as exc:
            return _refused(ObjectivePayload, exc)
        return ObjectivePayload(objective=shown_objective(info, row))

    @strawberry.mutation
    async def update_objective(self, info: Info, input: UpdateObjectiveInput) -> ObjectivePayload:
        p = info.context.principal
        try:
            pk = required_gid(input.objective_id, "Objective", "objectiveId")
            changes = changes_of(
                input,
                {
                    "title": "title",
                    "description": "description",
                    "weight": "weight",
                    "visibility": "visibility",
                },
            )
            if input.owner_id is not UNSET:
                changes["owner_id"] = gid(input.owner_id, "User", "ownerId")
            row = await run(
                info,
                lambda s: objectives.update_objective(s, p, pk, input.expected_version, changes),
            )
        except Rejected as exc:
            return _refused(ObjectivePayload, exc)
        return ObjectivePayload(objective=shown_objective(info, row))

    @strawberry.mutation
    async def align_objective(self, info: Info, input: AlignObjectiveInput) -> ObjectivePayload:
        p = info.context.principal
        try:
            pk = required_gid(input.objective_id, "Objective", "objectiveId")
            parent = gid(input.parent_id, "Objective", "parentId")
            row = await run(info, lambda s: objectives.align_objective(s, p, pk, parent))
        except Rejected as exc:
            return _refused(ObjectivePayload, exc)
        return ObjectivePayload(objective=shown_objective(info, row))

    @strawberry.mutation
    async def archive_objective(self, info: Info, input: ArchiveObjectiveInput) -> ObjectivePayload:
        p = info.context.principal
        try:
            pk = required_gid(input.objective_id, "Objective", "objectiveId")
            row = await run(info, lambda s: objectives.archive_objective(s, p, pk))
        except Rejected as exc:
            return _refused(ObjectivePayload, exc)
        return ObjectivePayload(objective=shown_objective(info, row))

    @strawberry.mutation
    async def create_key_result(self, info: Info, input: CreateKeyResultInput) -> KeyResultPayload:
        p = info.context.principal
        try:
            args = dict(
                objective_id=required_gid(input.objective_id, "Objective", "objectiveId"),
                owner_id=gid(input.owner_id, "User", "ownerId"),
                title=input.title,
                type=str(input.type.value),
                measure=input.measure.value,
                unit=input.unit,
                start_value=input.start_value,
                target_value=input.target_value,
                weight=input.weight,
            )
            row = await run(info, lambda s: key_results.create_key_result(s, p, **args))
        except Rejected as exc:
            return _refused(KeyResultPayload, exc)
        return KeyResultPayload(key_result=await shown_key_result(info, row))

    @strawberry.mutation
    async def update_key_result(self, info: Info, input: UpdateKeyResultInput) -> KeyResultPayload:
        p = info.context.principal
        try:
            pk = required_gid(input.key_result_id, "KeyResult", "keyResultId")
            changes = changes_of(
                input,
                {
                    "title": "title",
                    "measure": "measure",
                    "unit": "unit",
                    "start_value": "start_value",
                    "target_value": "target_value",
                    "weight": "weight",
                },
            )
            if input.owner_id is not UNSET:
                changes["owner_id"] = gid(input.owner_id, "User", "ownerId")
            row = await run(
                info,
                lambda s: key_results.update_key_result(s, p, pk, input.expected_version, changes),
            )
        except Rejected as exc:
            return _refused(KeyResultPayload, exc)
        return KeyResultPayload(key_result=await shown_key_result(info, row))

    @strawberry.mutation
    async def check_in(self, info: Info, input: CheckInInput) -> CheckInPayload:
        p = info.context.principal
        try:
            pk = required_gid(input.key_result_id, "KeyResult", "keyResultId")
            row, kr = await run(
                info,
                lambda s: key_results.check_in(
                    s,
                    p,
                    key_result_id=pk,
                    value=input.value,
                    confidence=input.confidence,
                    note=input.note,
                    idempotency_key=input.idempotency_key,
                    measured_at=input.measured_at,
                ),
            )
        except Rejected as exc:
            return _refused(CheckInPayload, exc)
        shown = await shown_key_result(info, kr)
        return CheckInPayload(
            check_in=CheckIn.of(row) if shown is not None else None, key_result=shown
        )

    @strawberry.mutation
    async def score_key_result(self, info: Info, input: ScoreKeyResultInput) -> KeyResultPayload:
        p = info.context.principal
        try:
            pk = required_gid(input.key_result_id, "KeyResult", "keyResultId")
            row = await run(
                info, lambda s: key_results.score_key_result(s, p, pk, input.score, input.reason)
            )
        except Rejected as exc:
            return _refused(KeyResultPayload, exc)
        return KeyResultPayload(key_result=await shown_key_result(info, row))

    @strawberry.mutation
    async def reflect_on_objective(self, info: Info, input: ReflectInput) -> ObjectivePayload:
        p = info.context.principal
        try:
            pk = required_gid(input.objective_id, "Objective", "objectiveId")
            changes = changes_of(
                input, {"went_well": "went_well", "challenges": "challenges", "lessons": "lessons"}
            )
            row = await run(info, lambda s: objectives.reflect_on_objective(s, p, pk, changes))
        except Rejected as exc:
            return _refused(ObjectivePayload, exc)
        return ObjectivePayload(objective=shown_objective(info, row))

    @strawberry.mutation
    async def add_comment(self, info: Info, input: AddCommentInput) -> CommentPayload:
        p = info.context.principal
        try:
            try:
                kind, pk = ids.decode(input.subject_id)
            except ids.BadId as exc:
                raise Rejected(ErrorCode.INVALID, f"subjectId: {exc}", ["subjectId"]) from None
            if kind not in ("Objective", "KeyResult"):
                raise Rejected(
                    ErrorCode.INVALID,
                    "subjectId: comments go on an objective or a key result",
                    ["subjectId"],
                )
            subject = {"objective_id" if kind == "Objective" else "key_result_id": pk}
            row = await run(info, lambda s: comments.add_comment(s, p, body=input.body, **subject))
        except Rejected as exc:
            return _refused(CommentPayload, exc)
        return CommentPayload(comment=Comment.of(row))

    @strawberry.mutation(
        description="Copy an objective and chosen key results into a later "
        "cycle; alignment is kept where the parent was carried over too."
    )
    async def carry_over_objective(
        self, info: Info, input: CarryOverObjectiveInput
    ) -> CarryOverPayload:
        p = info.context.principal
        try:
            pk = required_gid(input.objective_id, "Objective", "objectiveId")
            cycle = required_gid(input.to_cycle_id, "Cycle", "toCycleId")
            krs = [required_gid(k, "KeyResult", "keyResultIds") for k in input.key_result_ids]
            new, created = await run(
                info, lambda s: reviews.carry_over_objective(s, p, pk, cycle, krs)
            )
        except Rejected as exc:
            return _refused(CarryOverPayload, exc)
        old = await info.context.loaders.objective(pk)
        shown = shown_objective(info, new)
        return CarryOverPayload(
            objective=shown,
            carried_from=shown_objective(info, old),
            key_results=[KeyResult.of(k, new) for k in created] if shown is not None else [],
        )

    @strawberry.mutation(description="ADMIN only. A metric, unique by key in the organization.")
    async def create_metric(
        self, info: Info, input: metrics.CreateMetricInput
    ) -> metrics.MetricPayload:
        return await metrics.create_metric(info, input)

    @strawberry.mutation(
        description="Whoever may edit the key result may bind it to a metric (or unbind it)."
    )
    async def bind_key_result(
        self, info: Info, input: metrics.BindKeyResultInput
    ) -> KeyResultPayload:
        p = info.context.principal
        try:
            pk = required_gid(input.key_result_id, "KeyResult", "keyResultId")
            metric = gid(input.metric_id, "Metric", "metricId")
            row = await run(info, lambda s: metric_usecases.bind_key_result(s, p, pk, metric))
        except Rejected as exc:
            return _refused(KeyResultPayload, exc)
        return KeyResultPayload(key_result=await shown_key_result(info, row))

    @strawberry.mutation(
        description="ADMIN and SERVICE. Up to 1,000 measurements in one transaction, all or "
        "none; each becomes a check-in on every key result bound to its metric whose cycle "
        "is ACTIVE or in REVIEW and contains its instant."
    )
    async def record_measurements(
        self, info: Info, input: metrics.RecordMeasurementsInput
    ) -> metrics.RecordMeasurementsPayload:
        return await metrics.record_measurements(info, input)

    @strawberry.mutation(description="The organization's check-in cadence, or a team's.")
    async def set_check_in_cadence(
        self, info: Info, input: SetCheckInCadenceInput
    ) -> CheckInCadencePayload:
        p = info.context.principal
        try:
            team = gid(input.team_id, "Team", "teamId")
            await run(info, lambda s: reviews.set_check_in_cadence(s, p, team, input.days))
        except Rejected as exc:
            return _refused(CheckInCadencePayload, exc)
        row = await info.context.loaders.team.load(team) if team else None
        return CheckInCadencePayload(team=Team.of(row) if row else None, days=input.days)
