"""The event scope: one type, parsed in one place, byte-compatible with stored rows."""

from __future__ import annotations

import json

from service import events
from service.domain.enums import EventKind, SubjectType
from service.events import Scope


def test_stored_payloads_of_every_shape_parse_to_the_same_scope():
    # Rows as the service wrote them before the scope had a type.
    stored = json.loads(
        '{"changes": [], "objective_ids": [3, 1], "team_ids": [], "cycle_ids": [9]}'
    )
    assert Scope.parse(stored) == Scope((3, 1), (), (9,))
    assert Scope.parse({"name": "Q1", "cycle_ids": [4]}) == Scope((), (), (4,))
    assert Scope.parse({}) == Scope((), (), ())
    assert Scope.parse(None) == Scope((), (), ())


def test_the_payload_keeps_the_stored_keys_and_leaves_out_what_a_kind_never_carries():
    created = events.cycle_created(7, "Q3")
    assert created.kind is EventKind.CYCLE_CREATED
    assert created.subject_type is SubjectType.CYCLE
    assert created.payload() == {"name": "Q3", "cycle_ids": [7]}
    comment = events.comment_added(5, None, Scope.of_objective(2, None, 7))
    assert comment.payload() == {
        "key_result_id": None,
        "objective_ids": [2],
        "team_ids": [],
        "cycle_ids": [7],
    }
    assert Scope.parse(comment.payload()) == Scope((2,), (), (7,))


def test_a_subscription_filter_is_covered_only_when_every_named_id_is_in_scope():
    scope = Scope((1, 2), (10,), (100,))
    assert scope.covers(None, None, None)
    assert scope.covers(2, 10, 100)
    assert not scope.covers(3, None, None)
    assert not scope.covers(None, 11, None)
    assert not scope.covers(None, None, 101)
    # A kind without teams in its payload never matches a team filter.
    assert not Scope.parse({"cycle_ids": [100]}).covers(None, 10, None)


def test_a_check_in_carries_its_check_in_and_the_roll_up():
    change = {"type": "KeyResult", "id": 4, "previous": 0.0, "progress": 0.5}
    event = events.checked_in(4, 40, 5.0, [change], Scope((1,), (), (2,)), check_ins=3)
    assert event.check_in_id == 40
    assert event.payload() == {
        "value": 5.0,
        "check_ins": 3,
        "changes": [change],
        "objective_ids": [1],
        "team_ids": [],
        "cycle_ids": [2],
    }
