"""The Mutation root, in the contract's order. Each field's resolver lives with its
inputs and payload in this package's modules, and all of them run through one funnel
(common.py: input -> typed command -> use case in one transaction -> payload or
userErrors)."""

from __future__ import annotations

import strawberry

from schema.mutations import (
    administration,
    comments,
    corrections,
    cycles,
    key_results,
    metrics,
    objectives,
    organizations,
    plans,
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
    # --- administration (schema/mutations/administration.py) ---
    update_team = strawberry.mutation(
        resolver=administration.update_team,
        description="ADMIN only. Rename a team or move it in the team tree (a loop is "
        "INVALID on parentId).",
    )
    archive_team = strawberry.mutation(
        resolver=administration.archive_team,
        description="ADMIN only. The team leaves lists; one with members, or with objectives "
        "not archived in an ACTIVE cycle, is a CONFLICT.",
    )
    update_cycle = strawberry.mutation(
        resolver=administration.update_cycle,
        description="ADMIN only. Name and dates; statuses and expected progress follow the "
        "new dates at once. A range that leaves a check-in outside the cycle is INVALID.",
    )
    update_user = strawberry.mutation(
        resolver=administration.update_user,
        description="ADMIN only. Name, email, role; the last active admin cannot be demoted. "
        "A role change closes the person's open sockets (4403): they reconnect with it.",
    )
    reactivate_user = strawberry.mutation(
        resolver=administration.reactivate_user,
        description="ADMIN only. Bring back a deactivated person (not an anonymized one).",
    )
    anonymize_user = strawberry.mutation(
        resolver=administration.anonymize_user,
        description="ADMIN only. Erasure on request: name and email become a placeholder "
        "(also in the event feed), their tokens end, their id stays in history. It cannot "
        "be undone.",
    )
    archive_key_result = strawberry.mutation(
        resolver=administration.archive_key_result,
        description="Needs the right to edit the objective. The key result leaves lists and "
        "its objective's roll-up; the chain rolls up again at once.",
    )
    unarchive_objective = strawberry.mutation(
        resolver=administration.unarchive_objective,
        description="Needs the right to edit the objective: back in lists and roll-ups.",
    )
    update_metric = strawberry.mutation(
        resolver=administration.update_metric,
        description="ADMIN only. Name, unit, description (the key stays).",
    )
    archive_metric = strawberry.mutation(
        resolver=administration.archive_metric,
        description="ADMIN only. The metric leaves lists; its key results are unbound.",
    )
    retract_check_in = strawberry.mutation(
        resolver=corrections.retract_check_in,
        description="Take back a check-in: it stays listed, marked with who, when and why; "
        "the key result's value becomes its latest check-in not retracted (or its start) "
        "and the chain rolls up. Needs the right to check in on the key result; a service "
        "key retracts only its own check-ins.",
    )
    correct_check_in = strawberry.mutation(
        resolver=corrections.correct_check_in,
        description="A retraction plus a new check-in at the same instant, linked both ways "
        "(correctionOf, correctedBy). A check-in made by a measurement is corrected "
        "through its metric (retractMeasurement).",
    )
    retract_measurement = strawberry.mutation(
        resolver=corrections.retract_measurement,
        description="ADMIN and SERVICE. Retract a metric's measurement at exactly measuredAt, "
        "and every check-in it made, in one transaction; it stays in `measurements`, "
        "marked, and another may be recorded for that instant.",
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
    # --- plans as files (schema/mutations/plans.py) ---
    apply_plan = strawberry.mutation(
        resolver=plans.apply_plan,
        description="Apply a plan (YAML or JSON): a cycle's objectives and key results, "
        "matched by key. Every change is checked and authorized as the mutation it stands "
        "for; any problem or forbidden change refuses the whole plan (userErrors, each with "
        "its path), and a second apply of the same plan changes nothing.",
    )
