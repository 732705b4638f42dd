"""A batch of measurements, item by item: each checked on its own (a refusal names its
index), the refusals of a batch reported together, and what the batch wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service.domain.errors import Rejected, invalid
from service.usecases import common
from service.usecases.check_in_rows import CLOCK_SKEW
from service.usecases.commands import MeasurementInput
from service.usecases.common import MAX_IDEMPOTENCY_KEY, optional_text, required_text
from service.usecases.metric_definitions import BatchRejected, metric_key

MAX_SOURCE = 200
MAX_REPORTED_ERRORS = 100
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


@dataclass
class Recorded:
    """The batch's measurements in input order (a replayed one is the first run's row),
    and the check-ins it wrote, on every bound key result, hidden ones included."""

    measurements: list[Any] = field(default_factory=list)
    check_ins: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class CheckInRow:
    """A check-in the batch wrote, as the check_in table holds it."""

    id: int
    organization_id: int
    key_result_id: int
    value: float
    confidence: float | None
    note: str | None
    author_id: int | None
    api_key_id: int | None
    progress: float
    idempotency_key: str | None
    caller: str
    measured_at: datetime
    created_at: datetime
    measurement_id: int | None = None
    # As the table's columns (a fresh check-in is neither retracted nor a correction).
    retracted_at: datetime | None = None
    retracted_by_id: int | None = None
    retracted_by_api_key_id: int | None = None
    retraction_reason: str | None = None
    correction_of_id: int | None = None
    corrected_by_id: int | None = None


@dataclass
class Item:
    index: int
    key: str
    value: float
    measured_at: datetime | None
    source: str | None
    idempotency_key: str | None
    metric_id: int = 0


def at(index: int, name: str) -> list[str]:
    return ["measurements", str(index), name]


def checked(index: int, m: MeasurementInput, now: datetime) -> Item:
    """One item's plain values, or Rejected naming its index."""
    try:
        key = metric_key(m.metric_key, "metricKey")
        value = common.amount(m.value, "value")
        measured_at = m.measured_at
        if measured_at is not None:
            if measured_at.tzinfo is None:
                measured_at = measured_at.replace(tzinfo=UTC)
            if measured_at > now + CLOCK_SKEW:
                raise invalid("measuredAt must not lie in the future", "measuredAt")
            if measured_at < EARLIEST:
                raise invalid("measuredAt must not lie before 1900", "measuredAt")
        source = optional_text(m.source, "source", MAX_SOURCE)
        idempotency_key = m.idempotency_key
        if idempotency_key is not None:
            idempotency_key = required_text(idempotency_key, "idempotencyKey", MAX_IDEMPOTENCY_KEY)
    except Rejected as exc:
        name = exc.field[-1] if exc.field else "value"
        raise Rejected(exc.code, f"measurement {index}: {exc.message}", at(index, name)) from None
    return Item(index, key, value, measured_at, source, idempotency_key)


def refuse(errors: list[Rejected]) -> None:
    if errors:
        errors.sort(key=lambda e: int(e.field[1]) if e.field and len(e.field) > 1 else -1)
        raise BatchRejected(errors[:MAX_REPORTED_ERRORS])
