"""The Mutation root, in the contract's order. Each field's resolver lives with its
inputs and payload in this package's modules, and all of them run through one funnel
(common.py: input -> typed command -> use case in one transaction -> payload or
userErrors)."""

from __future__ import annotations

import strawberry

from schema.mutations import (
    comments,
    cycles,
    key_results,
    metrics,
    objectives,
    organizations,
    reviews,
    sources,
    webhooks,
)


@strawberry.type
class Mutation:
    create_team = strawberry.mutation(resolver=organizations.create_team)
    add_team_member = strawberry.mutation(resolver=organizations.add_team_member)
    remove_team_member = strawberry.mutation(
        resolver=organizations.remove_team_member, description="ADMIN only."
    )
    deactivate_user = strawberry.mutation(
        resolver=organizations.deactivate_user,
        description="ADMIN only. The user's tokens stop working at once, over HTTP and on "
        "open WebSockets; their history stays.",
    )
    create_user = strawberry.mutation(resolver=organizations.create_user)
    create_cycle = strawberry.mutation(resolver=cycles.create_cycle)
    set_cycle_status = strawberry.mutation(resolver=cycles.set_cycle_status)
    create_objective = strawberry.mutation(resolver=objectives.create_objective)
    update_objective = strawberry.mutation(resolver=objectives.update_objective)
    align_objective = strawberry.mutation(resolver=objectives.align_objective)
    archive_objective = strawberry.mutation(resolver=objectives.archive_objective)
    create_key_result = strawberry.mutation(resolver=key_results.create_key_result)
    update_key_result = strawberry.mutation(resolver=key_results.update_key_result)
    check_in = strawberry.mutation(resolver=key_results.check_in)
    score_key_result = strawberry.mutation(resolver=key_results.score_key_result)
    reflect_on_objective = strawberry.mutation(resolver=objectives.reflect_on_objective)
    add_comment = strawberry.mutation(resolver=comments.add_comment)
    carry_over_objective = strawberry.mutation(
        resolver=reviews.carry_over_objective,
        description="Copy an objective and chosen key results into a later "
        "cycle; alignment is kept where the parent was carried over too.",
    )
    create_metric = strawberry.mutation(
        resolver=metrics.create_metric,
        description="ADMIN only. A metric, unique by key in the organization.",
    )
    bind_key_result = strawberry.mutation(
        resolver=key_results.bind_key_result,
        description="Whoever may edit the key result may bind it to a metric (or unbind it).",
    )
    record_measurements = strawberry.mutation(
        resolver=metrics.record_measurements,
        description="ADMIN and SERVICE. Up to 1,000 measurements in one transaction, all or "
        "none; each becomes a check-in on every key result bound to its metric whose cycle "
        "is ACTIVE or in REVIEW and contains its instant.",
    )
    set_check_in_cadence = strawberry.mutation(
        resolver=reviews.set_check_in_cadence,
        description="The organization's check-in cadence, or a team's.",
    )
    set_metric_source = strawberry.mutation(
        resolver=sources.set_metric_source,
        description="ADMIN only. Where the metric pulls its value from (null kind removes "
        "it); clears the failure state.",
    )
    run_metric_source = strawberry.mutation(
        resolver=sources.run_metric_source,
        description="ADMIN and SERVICE. Run the metric's source now, once.",
    )
    create_webhook_endpoint = strawberry.mutation(
        resolver=webhooks.create_webhook_endpoint,
        description="ADMIN only. The secret is in the payload, this once.",
    )
    update_webhook_endpoint = strawberry.mutation(
        resolver=webhooks.update_webhook_endpoint, description="ADMIN only."
    )
    rotate_webhook_secret = strawberry.mutation(
        resolver=webhooks.rotate_webhook_secret,
        description="ADMIN only. A new secret, in the payload this once; the old one also "
        "signs for 24 hours.",
    )
    redeliver_webhook = strawberry.mutation(
        resolver=webhooks.redeliver_webhook,
        description="ADMIN only. A new delivery of the same event (the same webhook-id).",
    )
    ping_webhook_endpoint = strawberry.mutation(
        resolver=webhooks.ping_webhook_endpoint,
        description="ADMIN only. A ping, delivered once, without retries.",
    )
