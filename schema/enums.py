"""GraphQL enums. The domain's own enums are exposed as they are."""

from __future__ import annotations

from enum import Enum

import strawberry

from service import rules
from service.errors import ErrorCode as _ErrorCode
from service.events import EventKind as _EventKind

ProgressStatus = strawberry.enum(rules.ProgressStatus, name="ProgressStatus")
KeyResultType = strawberry.enum(rules.KeyResultType, name="KeyResultType")
CycleStatus = strawberry.enum(rules.CycleStatus, name="CycleStatus")
ErrorCode = strawberry.enum(_ErrorCode, name="ErrorCode")
EventKind = strawberry.enum(_EventKind, name="EventKind")


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
