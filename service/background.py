"""The job runner of this process (service/jobs.py) with every kind of job it runs:
the one place that names them all."""

from __future__ import annotations

from service import reminders
from service.db import Database
from service.jobs import Handler, Periodic, Runner, Scheduler
from service.settings import Settings


def runner(db: Database, settings: Settings) -> Runner:
    handlers: dict[str, Handler] = {
        reminders.KIND: reminders.handler(db),
    }
    periodic = []
    if settings.check_in_reminder_seconds > 0:
        periodic.append(
            Periodic(reminders.KIND, reminders.KIND, settings.check_in_reminder_seconds)
        )
    schedulers: list[Scheduler] = []
    return Runner(
        db,
        handlers,
        periodic=periodic,
        schedulers=schedulers,
        poll_seconds=settings.job_poll_seconds,
        lease_seconds=settings.job_lease_seconds,
        concurrency=settings.job_concurrency,
    )
