"""The job runner of this process (service/jobs.py) with every kind of job it runs:
the one place that names them all."""

from __future__ import annotations

from service import reminders, sources, webhooks
from service.db import Database
from service.jobs import Handler, Periodic, Runner, Scheduler
from service.outbound import Outbound
from service.secrets import Box
from service.settings import Settings


def runner(db: Database, settings: Settings, outbound: Outbound | None = None) -> Runner:
    """`outbound`: the client deliveries and sources go through (the settings' own when
    None); whoever passes one closes it."""
    outbound = outbound or Outbound.from_settings(settings)
    box = Box.from_settings(settings)
    handlers: dict[str, Handler] = {
        reminders.KIND: reminders.handler(db),
        webhooks.DELIVER: webhooks.deliverer(db, settings, outbound, box),
        sources.RUN: sources.runner(db, outbound, box, settings.max_batch_check_ins),
    }
    periodic = []
    if settings.check_in_reminder_seconds > 0:
        periodic.append(
            Periodic(reminders.KIND, reminders.KIND, settings.check_in_reminder_seconds)
        )
    schedulers: list[Scheduler] = [webhooks.fan_out, sources.schedule]
    return Runner(
        db,
        handlers,
        periodic=periodic,
        schedulers=schedulers,
        poll_seconds=settings.job_poll_seconds,
        lease_seconds=settings.job_lease_seconds,
        concurrency=settings.job_concurrency,
    )
