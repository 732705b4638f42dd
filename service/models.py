"""The tables. Every row but organization carries its organization id.

Stored progress (key_result.progress, objective.progress) is a cache of the OKR
rules, kept exact by the use cases and proven by `okr verify`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from service import clock

metadata = SQLModel.metadata
metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


OnDelete = Literal["CASCADE", "SET NULL", "RESTRICT"]


def table(model: type[SQLModel]) -> Table:
    """The model's Core table (SQLModel sets `__table__` at class creation; its stubs
    do not declare it)."""
    found = model.__dict__["__table__"]
    assert isinstance(found, Table)
    return found


class _Keyed(Protocol):
    @property
    def id(self) -> int | None: ...


def pk_of(row: _Keyed) -> int:
    """The key of a row that was read or flushed (`id` is None only before the insert)."""
    if row.id is None:
        raise ValueError(f"{type(row).__name__} has no id yet: flush it first")
    return row.id


def _pk() -> Any:
    return Field(default=None, sa_type=BigInteger, sa_column_args=[Identity()], primary_key=True)


def _org() -> Any:
    return Field(
        sa_type=BigInteger, foreign_key="organization.id", ondelete="CASCADE", nullable=False
    )


def _ref(target: str, *, nullable: bool = True, ondelete: OnDelete = "SET NULL") -> Any:
    return Field(
        default=None, sa_type=BigInteger, foreign_key=target, ondelete=ondelete, nullable=nullable
    )


def _created() -> Any:
    return Field(
        default=None,
        sa_type=DateTime(timezone=True),
        nullable=False,
        # The OKR clock's instant (service/clock.py); the server's only for raw inserts.
        sa_column_kwargs={"default": clock.now, "server_default": func.now()},
    )


def _float(default: float) -> Any:
    return Field(
        default=default,
        sa_type=Double,
        nullable=False,
        sa_column_kwargs={"server_default": text(repr(default))},
    )


def _text(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=Text, nullable=nullable)


class Organization(SQLModel, table=True):
    __tablename__ = "organization"
    __table_args__ = (
        CheckConstraint("on_track_gap >= 0 AND at_risk_gap >= on_track_gap", name="status_bounds"),
        CheckConstraint("check_in_cadence_days >= 1", name="cadence_positive"),
    )
    id: int | None = _pk()
    name: str = Field(sa_type=String(200), nullable=False)
    slug: str = Field(sa_type=String(64), nullable=False, unique=True)
    # The outbox's per-organization sequence: bumped under the row lock as the
    # last statement of every writing transaction, so it follows commit order.
    event_seq: int = Field(
        default=0, sa_type=BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    on_track_gap: float = _float(0.10)
    at_risk_gap: float = _float(0.25)
    check_in_cadence_days: int = Field(
        default=7, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "7"}
    )
    created_at: datetime | None = _created()


class User(SQLModel, table=True):
    __tablename__ = "app_user"
    __table_args__ = (
        UniqueConstraint("organization_id", "email", name="uq_app_user_organization_email"),
        CheckConstraint("role IN ('ADMIN', 'MEMBER', 'VIEWER')", name="role"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    name: str = Field(sa_type=String(200), nullable=False)
    email: str = Field(sa_type=String(320), nullable=False)
    role: str = Field(sa_type=String(16), nullable=False)
    # A deactivated user keeps their history, and their tokens stop working at once.
    active: bool = Field(
        default=True, sa_type=Boolean, nullable=False, sa_column_kwargs={"server_default": "true"}
    )
    # Erased on request (anonymizeUser): name and email are a placeholder, the person is
    # inactive for good, and the id stays in history.
    anonymized_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime | None = _created()


class Team(SQLModel, table=True):
    __tablename__ = "team"
    __table_args__ = (
        Index("ix_team_organization_parent", "organization_id", "parent_id"),
        CheckConstraint(
            "check_in_cadence_days IS NULL OR check_in_cadence_days >= 1", name="cadence_positive"
        ),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    name: str = Field(sa_type=String(200), nullable=False)
    parent_id: int | None = _ref("team.id", ondelete="RESTRICT")
    check_in_cadence_days: int | None = Field(default=None, sa_type=Integer)
    # An archived team leaves lists and takes no new objectives; it keeps its history.
    archived_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime | None = _created()


class TeamMembership(SQLModel, table=True):
    __tablename__ = "team_membership"
    __table_args__ = (Index("ix_team_membership_user", "user_id"),)
    organization_id: int = _org()
    team_id: int = Field(
        sa_type=BigInteger, foreign_key="team.id", ondelete="CASCADE", primary_key=True
    )
    user_id: int = Field(
        sa_type=BigInteger, foreign_key="app_user.id", ondelete="CASCADE", primary_key=True
    )
    created_at: datetime | None = _created()


class Cycle(SQLModel, table=True):
    __tablename__ = "cycle"
    __table_args__ = (
        CheckConstraint("ends_on >= starts_on", name="dates_ordered"),
        CheckConstraint("status IN ('PLANNING', 'ACTIVE', 'REVIEW', 'CLOSED')", name="status"),
        Index("ix_cycle_organization_status", "organization_id", "status"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    name: str = Field(sa_type=String(200), nullable=False)
    starts_on: date = Field(sa_type=Date, nullable=False)
    ends_on: date = Field(sa_type=Date, nullable=False)
    status: str = Field(
        default="PLANNING",
        sa_type=String(16),
        nullable=False,
        sa_column_kwargs={"server_default": "PLANNING"},
    )
    version: int = Field(
        default=1, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "1"}
    )
    created_at: datetime | None = _created()


class Objective(SQLModel, table=True):
    __tablename__ = "objective"
    __table_args__ = (
        CheckConstraint("weight >= 0", name="weight_nonnegative"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_fraction"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="score_fraction"),
        CheckConstraint("visibility IN ('PUBLIC', 'TEAM', 'PRIVATE')", name="visibility"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        Index("ix_objective_organization_cycle", "organization_id", "cycle_id", "id"),
        Index("ix_objective_parent", "parent_id"),
        Index("ix_objective_team", "team_id", "cycle_id"),
        Index("ix_objective_owner", "owner_id"),
        Index("ix_objective_carried_from", "carried_from_id"),
        Index(
            "ux_objective_external_key",
            "cycle_id",
            "external_key",
            unique=True,
            postgresql_where=text("external_key IS NOT NULL"),
        ),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    cycle_id: int = _ref("cycle.id", nullable=False, ondelete="RESTRICT")
    title: str = Field(sa_type=String(300), nullable=False)
    # A plan file's stable `key` for it (unique in its cycle), or None.
    external_key: str | None = Field(default=None, sa_type=String(100))
    description: str | None = _text()
    team_id: int | None = _ref("team.id", ondelete="RESTRICT")
    owner_id: int | None = _ref("app_user.id")
    parent_id: int | None = _ref("objective.id", ondelete="RESTRICT")
    weight: float = _float(1.0)
    visibility: str = Field(
        default="PUBLIC",
        sa_type=String(16),
        nullable=False,
        sa_column_kwargs={"server_default": "PUBLIC"},
    )
    progress: float = _float(0.0)
    # Whether anything under it has ever been checked in (NOT_STARTED otherwise).
    has_check_in: bool = Field(
        default=False, sa_type=Boolean, nullable=False, sa_column_kwargs={"server_default": "false"}
    )
    score: float | None = Field(default=None, sa_type=Double)
    went_well: str | None = _text()
    challenges: str | None = _text()
    lessons: str | None = _text()
    archived_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # The objective of an earlier cycle this one was carried over from.
    carried_from_id: int | None = _ref("objective.id")
    version: int = Field(
        default=1, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "1"}
    )
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()


class KeyResult(SQLModel, table=True):
    __tablename__ = "key_result"
    __table_args__ = (
        CheckConstraint("weight >= 0", name="weight_nonnegative"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_fraction"),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 1)", name="score_fraction"),
        CheckConstraint(
            "confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence"
        ),
        CheckConstraint(
            "type IN ('INCREASE', 'DECREASE', 'STAY_ABOVE', 'STAY_BELOW', 'MILESTONE')",
            name="type",
        ),
        CheckConstraint("measure IN ('NUMBER', 'PERCENT', 'CURRENCY')", name="measure"),
        Index("ix_key_result_objective", "objective_id", "id"),
        Index("ix_key_result_organization", "organization_id", "id"),
        Index("ix_key_result_metric", "metric_id"),
        Index(
            "ux_key_result_external_key",
            "objective_id",
            "external_key",
            unique=True,
            postgresql_where=text("external_key IS NOT NULL"),
        ),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    objective_id: int = _ref("objective.id", nullable=False, ondelete="CASCADE")
    title: str = Field(sa_type=String(300), nullable=False)
    # A plan file's stable `key` for it (unique in its objective), or None.
    external_key: str | None = Field(default=None, sa_type=String(100))
    owner_id: int | None = _ref("app_user.id")
    type: str = Field(sa_type=String(16), nullable=False)
    measure: str = Field(
        default="NUMBER",
        sa_type=String(16),
        nullable=False,
        sa_column_kwargs={"server_default": "NUMBER"},
    )
    unit: str | None = Field(default=None, sa_type=String(32))
    start_value: float = Field(sa_type=Double, nullable=False)
    target_value: float = Field(sa_type=Double, nullable=False)
    current_value: float = Field(sa_type=Double, nullable=False)
    weight: float = _float(1.0)
    progress: float = _float(0.0)
    confidence: float | None = Field(default=None, sa_type=Double)
    last_check_in_id: int | None = Field(default=None, sa_type=BigInteger)
    last_check_in_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    score: float | None = Field(default=None, sa_type=Double)
    score_reason: str | None = _text()
    carried_from_id: int | None = _ref("key_result.id")
    # The metric it is bound to: each measurement of it becomes a check-in here.
    metric_id: int | None = _ref("metric.id")
    # The silence a CHECK_IN_DUE event was last written for (its last check-in or
    # creation): one reminder per overdue stretch.
    due_notice_for: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # An archived key result leaves lists and its objective's roll-up; it keeps history.
    archived_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    version: int = Field(
        default=1, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "1"}
    )
    created_at: datetime | None = _created()
    updated_at: datetime | None = _created()


CHECK_IN_IDEMPOTENCY = "uq_check_in_key_result_caller_idempotency_key"


class CheckIn(SQLModel, table=True):
    __tablename__ = "check_in"
    __table_args__ = (
        # Idempotency keys are the caller's own: one scope per key result and caller.
        UniqueConstraint("key_result_id", "caller", "idempotency_key", name=CHECK_IN_IDEMPOTENCY),
        CheckConstraint(
            "confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence"
        ),
        Index("ix_check_in_key_result", "key_result_id", "id"),
        Index("ix_check_in_key_result_measured", "key_result_id", "measured_at", "id"),
        Index("ix_check_in_measurement", "measurement_id"),
        # A correction retracts what it corrects (nothing committed is destroyed).
        CheckConstraint(
            "corrected_by_id IS NULL OR retracted_at IS NOT NULL", name="corrected_is_retracted"
        ),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    key_result_id: int = _ref("key_result.id", nullable=False, ondelete="CASCADE")
    value: float = Field(sa_type=Double, nullable=False)
    confidence: float | None = Field(default=None, sa_type=Double)
    note: str | None = _text()
    author_id: int | None = _ref("app_user.id")
    api_key_id: int | None = _ref("api_key.id")
    progress: float = Field(sa_type=Double, nullable=False)
    idempotency_key: str | None = Field(default=None, sa_type=String(128))
    # Who checked in, as one non-null value ('user:12', 'key:3'), so a user and an API
    # key never share an idempotency scope by both leaving a column NULL.
    caller: str = Field(sa_type=String(40), nullable=False)
    # When the value was true (defaults to now; may be backdated inside the cycle). The
    # key result's current value is the one measured last.
    measured_at: datetime | None = _created()
    created_at: datetime | None = _created()
    # The measurement it was made from (a metric's check-in): corrected through the
    # metric (retractMeasurement), never on its own.
    measurement_id: int | None = _ref("measurement.id")
    # Retracted (docs/design.md, "Access"): kept, listed and marked; the record (current
    # value, roll-ups, realism, forecast, history) leaves it out. Who (a user or a key),
    # when and why.
    retracted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    retracted_by_id: int | None = _ref("app_user.id")
    retracted_by_api_key_id: int | None = _ref("api_key.id")
    retraction_reason: str | None = _text()
    # A correction is a retraction plus a new check-in at the same instant, linked both
    # ways: the new one's `correction_of_id`, the retracted one's `corrected_by_id`.
    correction_of_id: int | None = _ref("check_in.id")
    corrected_by_id: int | None = _ref("check_in.id")


class Comment(SQLModel, table=True):
    __tablename__ = "comment"
    __table_args__ = (
        CheckConstraint("(objective_id IS NULL) <> (key_result_id IS NULL)", name="one_subject"),
        Index("ix_comment_objective", "objective_id", "id"),
        Index("ix_comment_key_result", "key_result_id", "id"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    objective_id: int | None = _ref("objective.id", ondelete="CASCADE")
    key_result_id: int | None = _ref("key_result.id", ondelete="CASCADE")
    author_id: int | None = _ref("app_user.id")
    body: str = Field(sa_type=Text, nullable=False)
    created_at: datetime | None = _created()


class Metric(SQLModel, table=True):
    """A number that lives in another system (cost per order, on-time dispatch), posted
    once by that system; the key results bound to it take each value as a check-in.
    (The service's own Prometheus figures are "telemetry", never this.)"""

    __tablename__ = "metric"
    __table_args__ = (
        UniqueConstraint("organization_id", "key", name="uq_metric_organization_key"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    # What services know it by ("cost_per_order"): unique in the organization.
    key: str = Field(sa_type=String(100), nullable=False)
    name: str = Field(sa_type=String(200), nullable=False)
    unit: str | None = Field(default=None, sa_type=String(32))
    description: str | None = _text()
    # An archived metric leaves lists; its key results were unbound when it was archived.
    archived_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime | None = _created()


MEASUREMENT_IDEMPOTENCY = "uq_measurement_metric_caller_idempotency_key"


class Measurement(SQLModel, table=True):
    """One value of a metric at an instant, kept whether or not any key result took it."""

    __tablename__ = "measurement"
    __table_args__ = (
        # Idempotency keys are the caller's own, per metric (the check-in rule).
        UniqueConstraint("metric_id", "caller", "idempotency_key", name=MEASUREMENT_IDEMPOTENCY),
        Index("ix_measurement_metric_measured", "metric_id", "measured_at", "id"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    metric_id: int = _ref("metric.id", nullable=False, ondelete="CASCADE")
    value: float = Field(sa_type=Double, nullable=False)
    measured_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    source: str | None = _text()
    # Who recorded it, as check_in.caller ('user:12', 'key:3').
    caller: str = Field(sa_type=String(40), nullable=False)
    idempotency_key: str | None = Field(default=None, sa_type=String(128))
    created_at: datetime | None = _created()
    # Retracted (retractMeasurement): kept in `measurements`, marked; it leaves `latest`
    # and the record, and another may be recorded for the same instant.
    retracted_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    retracted_by_id: int | None = _ref("app_user.id")
    retracted_by_api_key_id: int | None = _ref("api_key.id")
    retraction_reason: str | None = _text()


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: int | None = _pk()
    organization_id: int = _org()
    name: str = Field(sa_type=String(200), nullable=False)
    # Only a SHA-256 of the secret is kept; the key itself is shown once.
    key_hash: str = Field(sa_type=String(64), nullable=False, unique=True)
    created_at: datetime | None = _created()
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Written at most once a minute per key (service/auth.py), not on every request.
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # A key limited to teams (`okr apikey create --team`) reads and writes only what a
    # member of its teams (api_key_team) could. Kept apart from the rows, so that a key
    # whose teams are all gone is limited to nothing, never unlimited.
    team_limited: bool = Field(
        default=False, sa_type=Boolean, nullable=False, sa_column_kwargs={"server_default": "false"}
    )


class ApiKeyTeam(SQLModel, table=True):
    """The teams a team-limited API key acts for."""

    __tablename__ = "api_key_team"
    organization_id: int = _org()
    api_key_id: int = Field(
        sa_type=BigInteger, foreign_key="api_key.id", ondelete="CASCADE", primary_key=True
    )
    team_id: int = Field(
        sa_type=BigInteger, foreign_key="team.id", ondelete="CASCADE", primary_key=True
    )


class Event(SQLModel, table=True):
    """The outbox: one row per committed change, in commit order per organization."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("organization_id", "seq", name="uq_event_organization_seq"),
        Index("ix_event_subject", "organization_id", "subject_type", "subject_id", "seq"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    seq: int = Field(sa_type=BigInteger, nullable=False)
    kind: str = Field(sa_type=String(40), nullable=False)
    actor_user_id: int | None = _ref("app_user.id")
    actor_api_key_id: int | None = _ref("api_key.id")
    subject_type: str = Field(sa_type=String(40), nullable=False)
    subject_id: int = Field(sa_type=BigInteger, nullable=False)
    check_in_id: int | None = Field(default=None, sa_type=BigInteger)
    # {"changes": [...], "objective_ids": [...], "team_ids": [...], "cycle_ids": [...]}
    payload: dict = Field(default_factory=dict, sa_type=JSONB, nullable=False)
    occurred_at: datetime | None = _created()


class Job(SQLModel, table=True):
    """Work that happens later (service/jobs.py): taken by one process at a time, with a
    lease, so a job whose process died runs again once its lease runs out. A job that
    succeeds is deleted; one that fails for good stays, FAILED, for `okr jobs`."""

    __tablename__ = "job"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'RUNNING', 'FAILED')", name="status"),
        Index("ix_job_status_run_at", "status", "run_at"),
    )
    id: int | None = _pk()
    kind: str = Field(sa_type=String(40), nullable=False)
    organization_id: int | None = _ref("organization.id", ondelete="CASCADE")
    payload: dict = Field(default_factory=dict, sa_type=JSONB, nullable=False)
    status: str = Field(
        default="PENDING",
        sa_type=String(16),
        nullable=False,
        sa_column_kwargs={"server_default": "PENDING"},
    )
    run_at: datetime = Field(
        sa_type=DateTime(timezone=True),
        nullable=False,
        sa_column_kwargs={"server_default": func.now()},
    )
    attempts: int = Field(
        default=0, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    locked_by: str | None = Field(default=None, sa_type=String(100))
    locked_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_error: str | None = _text()
    created_at: datetime | None = Field(
        default=None,
        sa_type=DateTime(timezone=True),
        nullable=False,
        sa_column_kwargs={"server_default": func.now()},
    )


class JobSchedule(SQLModel, table=True):
    """The last time slot each periodic job was queued for: one job per slot, whatever
    the number of processes (the UPDATE that moves the slot is the guard)."""

    __tablename__ = "job_schedule"
    name: str = Field(sa_type=String(100), primary_key=True)
    last_slot: int = Field(sa_type=BigInteger, nullable=False)


class WebhookEndpoint(SQLModel, table=True):
    """Where an organization's events are posted (service/webhooks.py). Secrets are kept
    encrypted (service/secrets.py); `last_seq` is the outbox position queued up to."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_organization", "organization_id", "id"),)
    id: int | None = _pk()
    organization_id: int = _org()
    url: str = Field(sa_type=Text, nullable=False)
    description: str | None = _text()
    kinds: list = Field(default_factory=list, sa_type=JSONB, nullable=False)
    team_id: int | None = _ref("team.id", ondelete="RESTRICT")
    active: bool = Field(
        default=True, sa_type=Boolean, nullable=False, sa_column_kwargs={"server_default": "true"}
    )
    disabled_reason: str | None = _text()
    secret: str | None = _text()  # encrypted
    old_secret: str | None = _text()  # encrypted; signs too until old_secret_until
    old_secret_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_seq: int = Field(
        default=0, sa_type=BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    # Since when every attempt has failed (NULL: the last one succeeded).
    failing_since: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime | None = _created()


class WebhookDelivery(SQLModel, table=True):
    """One event (or ping) for one endpoint, and its last attempt."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'SUCCEEDED', 'RETRYING', 'FAILED')", name="status"),
        Index("ix_webhook_delivery_endpoint", "endpoint_id", "id"),
    )
    id: int | None = _pk()
    organization_id: int = _org()
    endpoint_id: int = _ref("webhook_endpoint.id", nullable=False, ondelete="CASCADE")
    event_id: int | None = _ref("event.id", ondelete="CASCADE")  # NULL: a ping
    status: str = Field(
        default="PENDING",
        sa_type=String(16),
        nullable=False,
        sa_column_kwargs={"server_default": "PENDING"},
    )
    attempts: int = Field(
        default=0, sa_type=Integer, nullable=False, sa_column_kwargs={"server_default": "0"}
    )
    next_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    response_status: int | None = Field(default=None, sa_type=Integer)
    response_body: str | None = _text()
    duration_ms: float | None = Field(default=None, sa_type=Double)
    created_at: datetime | None = _created()


class MetricSource(SQLModel, table=True):
    """Where a metric pulls its value from (service/sources.py), at each multiple of
    `interval_seconds` since the epoch."""

    __tablename__ = "metric_source"
    __table_args__ = (
        CheckConstraint("kind IN ('PROMETHEUS', 'HTTP_JSON')", name="kind"),
        CheckConstraint("interval_seconds >= 60", name="interval"),
        Index("ix_metric_source_next_run", "next_run_at"),
    )
    metric_id: int = Field(
        sa_type=BigInteger, foreign_key="metric.id", ondelete="CASCADE", primary_key=True
    )
    organization_id: int = _org()
    kind: str = Field(sa_type=String(16), nullable=False)
    url: str = Field(sa_type=Text, nullable=False)
    query: str = Field(sa_type=Text, nullable=False)
    interval_seconds: int = Field(sa_type=Integer, nullable=False)
    headers: str | None = _text()  # encrypted JSON
    next_run_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    last_run_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_value: float | None = Field(default=None, sa_type=Double)
    last_error: str | None = _text()
    failing: bool = Field(
        default=False, sa_type=Boolean, nullable=False, sa_column_kwargs={"server_default": "false"}
    )
    created_at: datetime | None = _created()
