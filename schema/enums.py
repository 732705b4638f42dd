"""GraphQL enums. The domain's own enums are exposed as they are."""

from __future__ import annotations

from enum import Enum

import strawberry

from service.domain import enums as domain_enums
from service.domain.enums import EventKind as _EventKind
from service.domain.errors import ErrorCode as _ErrorCode

ProgressStatus = strawberry.enum(domain_enums.ProgressStatus, name="ProgressStatus")
KeyResultType = strawberry.enum(domain_enums.KeyResultType, name="KeyResultType")
CycleStatus = strawberry.enum(domain_enums.CycleStatus, name="CycleStatus")
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
