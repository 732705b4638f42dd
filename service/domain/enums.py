"""The domain's vocabularies: closed sets of names shared by the rules, the use cases,
the stored rows and the GraphQL enums (which mirror these, value for value)."""

from __future__ import annotations

from enum import StrEnum


class KeyResultType(StrEnum):
    INCREASE = "INCREASE"
    DECREASE = "DECREASE"
    STAY_ABOVE = "STAY_ABOVE"
    STAY_BELOW = "STAY_BELOW"
    MILESTONE = "MILESTONE"


class ProgressStatus(StrEnum):
    NOT_STARTED = "NOT_STARTED"
    ON_TRACK = "ON_TRACK"
    AT_RISK = "AT_RISK"
    OFF_TRACK = "OFF_TRACK"
    ACHIEVED = "ACHIEVED"


class CycleStatus(StrEnum):
    PLANNING = "PLANNING"
    ACTIVE = "ACTIVE"
    REVIEW = "REVIEW"
    CLOSED = "CLOSED"


class RealismVerdict(StrEnum):
    REALISTIC = "REALISTIC"
    STRETCH = "STRETCH"
    UNLIKELY = "UNLIKELY"
    UNKNOWN = "UNKNOWN"


class EventKind(StrEnum):
    ORGANIZATION_CREATED = "ORGANIZATION_CREATED"
    USER_CREATED = "USER_CREATED"
    TEAM_CREATED = "TEAM_CREATED"
    TEAM_MEMBER_ADDED = "TEAM_MEMBER_ADDED"
    TEAM_MEMBER_REMOVED = "TEAM_MEMBER_REMOVED"
    USER_DEACTIVATED = "USER_DEACTIVATED"
    CYCLE_CREATED = "CYCLE_CREATED"
    CYCLE_STATUS_CHANGED = "CYCLE_STATUS_CHANGED"
    OBJECTIVE_CREATED = "OBJECTIVE_CREATED"
    OBJECTIVE_UPDATED = "OBJECTIVE_UPDATED"
    OBJECTIVE_ALIGNED = "OBJECTIVE_ALIGNED"
    OBJECTIVE_ARCHIVED = "OBJECTIVE_ARCHIVED"
    OBJECTIVE_REFLECTED = "OBJECTIVE_REFLECTED"
    KEY_RESULT_CREATED = "KEY_RESULT_CREATED"
    KEY_RESULT_UPDATED = "KEY_RESULT_UPDATED"
    KEY_RESULT_SCORED = "KEY_RESULT_SCORED"
    CHECK_IN = "CHECK_IN"
    COMMENT_ADDED = "COMMENT_ADDED"
    OBJECTIVE_CARRIED_OVER = "OBJECTIVE_CARRIED_OVER"
    CHECK_IN_DUE = "CHECK_IN_DUE"
    CYCLE_REVIEW_DUE = "CYCLE_REVIEW_DUE"
    CHECK_IN_CADENCE_CHANGED = "CHECK_IN_CADENCE_CHANGED"
    API_KEY_CREATED = "API_KEY_CREATED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    METRIC_CREATED = "METRIC_CREATED"
    KEY_RESULT_BOUND = "KEY_RESULT_BOUND"
    MEASUREMENTS_RECORDED = "MEASUREMENTS_RECORDED"


class SubjectType(StrEnum):
    """What an event is about: the `subject_type` column of the event row, which is
    also the GraphQL type name its `subject` resolves to."""

    ORGANIZATION = "Organization"
    USER = "User"
    TEAM = "Team"
    CYCLE = "Cycle"
    OBJECTIVE = "Objective"
    KEY_RESULT = "KeyResult"
    CHECK_IN = "CheckIn"
    COMMENT = "Comment"
    API_KEY = "ApiKey"
    METRIC = "Metric"


class Visibility(StrEnum):
    PUBLIC = "PUBLIC"
    TEAM = "TEAM"
    PRIVATE = "PRIVATE"


class Measure(StrEnum):
    NUMBER = "NUMBER"
    PERCENT = "PERCENT"
    CURRENCY = "CURRENCY"


class Role(StrEnum):
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"
    VIEWER = "VIEWER"
    SERVICE = "SERVICE"
