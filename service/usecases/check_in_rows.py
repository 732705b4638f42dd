"""What a check-in reads and replays: the caller whose idempotency keys these are, the
rule that the same key again means the same value at the same instant (check-ins and
measurements alike), and rows read as json by `okr_check_in_read` made into models."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Date, DateTime, Float, inspect
from sqlalchemy.orm import configure_mappers

from service.domain.errors import ErrorCode, Rejected
from service.domain.principal import Principal
from service.models import CheckIn, Cycle, KeyResult, Objective

CLOCK_SKEW = timedelta(minutes=1)


def caller_of(p: Principal) -> str:
    """Whose idempotency keys these are: a user's and an API key's never share a scope."""
    if p.user_id is not None:
        return f"user:{p.user_id}"
    if p.api_key_id is not None:
        return f"key:{p.api_key_id}"
    return f"organization:{p.organization_id}"


def same_as_before(earlier: Any, value: float, measured_at: datetime | None) -> bool:
    """The idempotency rule of check-ins and measurements alike: the same key again means
    the same value at the same instant (None: "now", so the first must have been too)."""
    if measured_at is None:
        assert earlier.measured_at is not None and earlier.created_at is not None
        same_instant = abs(earlier.measured_at - earlier.created_at) <= CLOCK_SKEW
    else:
        same_instant = earlier.measured_at == measured_at
    return bool(earlier.value == value and same_instant)


def replay(earlier: CheckIn, value: float, measured_at: datetime | None) -> None:
    """The same key again must mean the same check-in: same value, same instant."""
    if not same_as_before(earlier, value, measured_at):
        raise Rejected(
            ErrorCode.CONFLICT,
            "this idempotency key was already used for a check-in with a different value "
            "or instant; use a new key for a new check-in",
            ["idempotencyKey"],
        )


M = TypeVar("M", CheckIn, KeyResult, Objective, Cycle)


def from_json(model: type[M], data: dict[str, Any]) -> M:
    """A row read as json (okr_check_in_read) as its model, with its column types."""
    values: dict[str, Any] = {}
    for column in model.__table__.columns:  # type: ignore[attr-defined]
        value = data.get(column.name)
        if value is not None:
            if isinstance(column.type, DateTime):
                value = datetime.fromisoformat(value)
            elif isinstance(column.type, Date):
                value = date.fromisoformat(value)
            elif isinstance(column.type, Float):
                value = float(value)
        values[column.name] = value
    return construct(model, values)


def construct(model: type[M], values: dict[str, Any]) -> M:
    """A detached model instance holding `values` (one per column), made the way the ORM
    makes a row it loads (its mapper's class manager makes the instance and its state, the
    values go straight into its dict), without the per-attribute validation and events of
    `model(**values)` (0.4 ms a row, most of a check-in's own CPU time otherwise). Like a
    loaded row it has no pydantic "fields set". Nothing is added to a session."""
    configure_mappers()  # at once when nothing is new; the attributes need their mappers
    row: M = inspect(model).class_manager.new_instance()
    row.__dict__.update(values)
    return row
