"""What each write asks for, as plain typed values: one frozen dataclass per use case,
built by the GraphQL face from its input (ids decoded, enums as the domain's enums) and
taken by the use case as it is. A field left out of an update is `KEEP`; `None` there
is a value the caller sent (and the use case may refuse it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Final

from service.domain.enums import CycleStatus, KeyResultType, Measure, Role, Visibility


class Keep(Enum):
    """The value of an update's field the caller did not send."""

    KEEP = "KEEP"


KEEP: Final = Keep.KEEP


# --- organizations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateUser:
    name: str
    email: str
    role: Role = Role.MEMBER


@dataclass(frozen=True)
class DeactivateUser:
    user_id: int


@dataclass(frozen=True)
class UpdateUser:
    user_id: int
    name: str | Keep | None = KEEP
    email: str | Keep | None = KEEP
    role: Role | Keep | None = KEEP


@dataclass(frozen=True)
class UserId:
    """Reactivating or anonymizing a person."""

    user_id: int


@dataclass(frozen=True)
class UpdateTeam:
    team_id: int
    name: str | Keep | None = KEEP
    parent_id: int | Keep | None = KEEP  # None: a top-level team


@dataclass(frozen=True)
class ArchiveTeam:
    team_id: int


@dataclass(frozen=True)
class CreateTeam:
    name: str
    parent_id: int | None = None


@dataclass(frozen=True)
class TeamMember:
    """Adding a user to a team, or removing them from it."""

    team_id: int
    user_id: int


# --- cycles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateCycle:
    name: str
    starts_on: date
    ends_on: date


@dataclass(frozen=True)
class SetCycleStatus:
    cycle_id: int
    status: CycleStatus


@dataclass(frozen=True)
class UpdateCycle:
    cycle_id: int
    expected_version: int | None = None
    name: str | Keep | None = KEEP
    starts_on: date | Keep | None = KEEP
    ends_on: date | Keep | None = KEEP


# --- objectives ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateObjective:
    cycle_id: int
    title: str
    description: str | None = None
    team_id: int | None = None
    owner_id: int | None = None  # None: the caller
    parent_id: int | None = None
    weight: float = 1.0
    visibility: Visibility = Visibility.PUBLIC
    external_key: str | None = None  # its key in a plan file (service/usecases/plans.py)


@dataclass(frozen=True)
class UpdateObjective:
    objective_id: int
    expected_version: int | None = None
    title: str | Keep | None = KEEP
    description: str | Keep | None = KEEP
    owner_id: int | Keep | None = KEEP
    weight: float | Keep | None = KEEP
    visibility: Visibility | Keep | None = KEEP


@dataclass(frozen=True)
class AlignObjective:
    objective_id: int
    parent_id: int | None  # None unaligns


@dataclass(frozen=True)
class ArchiveObjective:
    objective_id: int


@dataclass(frozen=True)
class UnarchiveObjective:
    objective_id: int


@dataclass(frozen=True)
class Reflect:
    objective_id: int
    went_well: str | Keep | None = KEEP
    challenges: str | Keep | None = KEEP
    lessons: str | Keep | None = KEEP


# --- key results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateKeyResult:
    objective_id: int
    title: str
    type: KeyResultType
    measure: Measure = Measure.NUMBER
    unit: str | None = None
    start_value: float | None = None
    target_value: float | None = None
    weight: float = 1.0
    owner_id: int | None = None
    external_key: str | None = None  # its key in a plan file (service/usecases/plans.py)


@dataclass(frozen=True)
class UpdateKeyResult:
    key_result_id: int
    expected_version: int | None = None
    title: str | Keep | None = KEEP
    owner_id: int | Keep | None = KEEP
    measure: Measure | Keep | None = KEEP
    unit: str | Keep | None = KEEP
    start_value: float | Keep | None = KEEP
    target_value: float | Keep | None = KEEP
    weight: float | Keep | None = KEEP


@dataclass(frozen=True)
class CheckIn:
    key_result_id: int
    value: float
    confidence: float | None = None
    note: str | None = None
    idempotency_key: str | None = None
    measured_at: datetime | None = None  # None: now


@dataclass(frozen=True)
class ArchiveKeyResult:
    key_result_id: int


@dataclass(frozen=True)
class RetractCheckIn:
    check_in_id: int
    reason: str


@dataclass(frozen=True)
class CorrectCheckIn:
    """A retraction plus a new check-in at the same instant. `confidence` and `note` left
    out (KEEP) are the corrected check-in's."""

    check_in_id: int
    value: float
    reason: str
    confidence: float | Keep | None = KEEP
    note: str | Keep | None = KEEP


@dataclass(frozen=True)
class ScoreKeyResult:
    key_result_id: int
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class BindKeyResult:
    key_result_id: int
    metric_id: int | None  # None unbinds


# --- plans as files -------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyPlan:
    """A plan's YAML or JSON text (service/plan_format.py)."""

    document: str
    dry_run: bool = False
    prune: bool = False


# --- comments, reviews, metrics --------------------------------------------------------------


@dataclass(frozen=True)
class AddComment:
    """A comment on an objective (`key_result_id` None) or on a key result."""

    body: str
    objective_id: int | None = None
    key_result_id: int | None = None


@dataclass(frozen=True)
class CarryOver:
    objective_id: int
    to_cycle_id: int
    key_result_ids: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SetCheckInCadence:
    team_id: int | None  # None: the organization's
    days: int | None


@dataclass(frozen=True)
class CreateMetric:
    key: str
    name: str
    unit: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class UpdateMetric:
    metric_id: int
    name: str | Keep | None = KEEP
    unit: str | Keep | None = KEEP
    description: str | Keep | None = KEEP


@dataclass(frozen=True)
class ArchiveMetric:
    metric_id: int


@dataclass(frozen=True)
class MeasurementInput:
    """One value of a batch (`metrics.record_measurements` takes a sequence of them)."""

    metric_key: str
    value: float
    measured_at: datetime | None = None  # None: now
    source: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class RetractMeasurement:
    """The metric's measurement at exactly `measured_at`, and every check-in it made."""

    metric_key: str
    measured_at: datetime
    reason: str
