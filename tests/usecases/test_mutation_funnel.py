"""The mutation funnel (schema/mutations/common.py): every payload implements `Payload`;
a refused command (a bad id, a bad value) comes back as userErrors and writes nothing;
an update's field left out is KEEP, a null sent is a value the use case judges."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from schema import ids
from schema.api import build_schema
from service.domain import enums as domain_enums
from service.domain.errors import ErrorCode, Rejected
from service.usecases import commands, key_results, objectives
from service.usecases.commands import KEEP
from tests import factories as helpers
from tests.factories import Org

PAYLOADS = {
    "TeamPayload",
    "UserPayload",
    "CyclePayload",
    "ObjectivePayload",
    "KeyResultPayload",
    "CheckInPayload",
    "CommentPayload",
    "CarryOverPayload",
    "CheckInCadencePayload",
    "MetricPayload",
    "RecordMeasurementsPayload",
    "RetractMeasurementPayload",
    "WebhookEndpointPayload",
    "WebhookDeliveryPayload",
    "ApplyPlanPayload",
}


def test_every_mutation_returns_a_payload_of_one_interface() -> None:
    schema = build_schema()
    sdl = schema.as_str()
    for name in PAYLOADS:
        assert f"type {name} implements Payload {{" in sdl, name
    mutation = schema._schema.mutation_type
    assert mutation is not None
    returned = {str(f.type).rstrip("!") for f in mutation.fields.values()}
    assert returned == PAYLOADS


def test_commands_are_frozen_and_updates_keep_what_is_left_out() -> None:
    cmd = commands.UpdateObjective(objective_id=1, title="New")
    assert cmd.description is KEEP and cmd.owner_id is KEEP and cmd.visibility is KEEP
    with pytest.raises(AttributeError):
        cmd.title = "Other"  # type: ignore[misc]


async def _count(org: Org) -> int:
    async def work(s):  # type: ignore[no-untyped-def]
        return (
            await s.execute(
                text("SELECT count(*) FROM event WHERE organization_id = :org"), {"org": org.id}
            )
        ).scalar_one()

    return int(await org.db.transaction(work))


async def test_a_bad_id_in_a_command_is_a_user_error_and_writes_nothing(org: Org) -> None:
    cycle = await helpers.active_cycle(org)
    before = await _count(org)
    payload = await helpers.mutate(
        org,
        "createObjective",
        {"cycleId": cycle, "title": "Ship", "parentId": "not-an-id"},
        "objective { id }",
    )
    assert payload["objective"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID"]
    assert payload["userErrors"][0]["field"] == ["parentId"]
    comment = await helpers.mutate(
        org, "addComment", {"subjectId": cycle, "body": "hello"}, "comment { id }"
    )
    assert comment["comment"] is None
    assert comment["userErrors"][0]["field"] == ["subjectId"]
    assert "objective or a key result" in comment["userErrors"][0]["message"]
    assert await _count(org) == before


async def test_update_left_out_keeps_null_sent_is_judged(org: Org) -> None:
    cycle = await helpers.active_cycle(org)
    obj = await helpers.objective(org, cycle, "Ship", description="Before")
    kept = await helpers.ok(
        org,
        "updateObjective",
        {"objectiveId": obj, "title": "Ship v2"},
        "objective { title description }",
    )
    assert kept["objective"] == {"title": "Ship v2", "description": "Before"}
    cleared = await helpers.ok(
        org,
        "updateObjective",
        {"objectiveId": obj, "description": None},
        "objective { title description }",
    )
    assert cleared["objective"] == {"title": "Ship v2", "description": None}
    refused = await helpers.mutate(
        org, "updateObjective", {"objectiveId": obj, "ownerId": None}, "objective { id }"
    )
    assert refused["objective"] is None
    assert refused["userErrors"][0]["field"] == ["ownerId"]


async def test_use_cases_take_commands_with_domain_enums(org: Org) -> None:
    cycle_gid = await helpers.active_cycle(org)

    cycle_id = ids.decode_as(cycle_gid, "Cycle")
    p = org.admin
    obj = await org.db.transaction(
        lambda s: objectives.create_objective(
            s,
            p,
            commands.CreateObjective(
                cycle_id=cycle_id, title="Typed", visibility=domain_enums.Visibility.TEAM
            ),
        )
    )
    assert obj.visibility == "TEAM"
    kr = await org.db.transaction(
        lambda s: key_results.create_key_result(
            s,
            p,
            commands.CreateKeyResult(
                objective_id=obj.id,
                title="Done",
                type=domain_enums.KeyResultType.MILESTONE,
                measure=domain_enums.Measure.PERCENT,
            ),
        )
    )
    assert (kr.type, kr.measure, kr.start_value, kr.target_value) == ("MILESTONE", "PERCENT", 0, 1)
    with pytest.raises(Rejected) as refused:
        await org.db.transaction(
            lambda s: key_results.update_key_result(
                s, p, commands.UpdateKeyResult(key_result_id=kr.id, measure=None)
            )
        )
    assert refused.value.code is ErrorCode.INVALID
    assert refused.value.field == ["measure"]
