"""GraphQL enums. The domain's own enums are exposed as they are."""

from __future__ import annotations

from enum import Enum

import strawberry

from service.domain.enums import (
    CycleStatus,
    DeliveryStatus,
    EventKind,
    KeyResultType,
    MetricSourceKind,
    ProgressStatus,
)
from service.domain.errors import ErrorCode

# Exposed as they are: `strawberry.enum` registers the domain class itself (and returns
# it), so annotations name the domain enums and mypy sees real classes.
for _domain_enum in (
    ProgressStatus,
    KeyResultType,
    CycleStatus,
    ErrorCode,
    EventKind,
    DeliveryStatus,
    MetricSourceKind,
):
    strawberry.enum(_domain_enum, name=_domain_enum.__name__)

__all__ = [
    "CycleStatus",
    "DeliveryStatus",
    "ErrorCode",
    "EventKind",
    "KeyResultType",
    "Measure",
    "MetricSourceKind",
    "ProgressStatus",
    "Role",
    "Visibility",
]


@strawberry.enum
class Role(Enum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    VIEWER = "VIEWER"
    SERVICE = "SERVICE"


@strawberry.enum
class Visibility(Enum):
    PUBLIC = "PUBLIC"
    TEAM = "TEAM"
    PRIVATE = "PRIVATE"


@strawberry.enum
class Measure(Enum):
    NUMBER = "NUMBER"
    PERCENT = "PERCENT"
    CURRENCY = "CURRENCY"
