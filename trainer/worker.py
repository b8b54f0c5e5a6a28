"""The scheduler: an APScheduler job that considers a training cycle at an interval.

The job fires in every worker process; the database lease inside `run_cycle` makes sure
only one cycle runs at a time across all of them.
"""

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from feedback.db import open_store
from flywheel.settings import Settings
from trainer.cycle import cycle_config_from, run_cycle
from trainer.watch import watch_job

log = logging.getLogger(__name__)


def cycle_job(settings: Settings) -> None:
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    try:
        result = run_cycle(settings, engine,
                           cycle_config_from(settings))
        log.info("cycle %s%s", result.status, f": {result.reason}" if result.reason else "",
                 extra={"run_id": result.run_id, "adapter": result.adapter_version})
    finally:
        engine.dispose()


def make_scheduler(settings: Settings, *, background: bool):
    """A scheduler with the cycle job and the watch job (`trainer.watch`); `background`
    for running beside the server."""
    scheduler = (BackgroundScheduler if background else BlockingScheduler)(timezone="UTC")
    scheduler.add_job(cycle_job, "interval", args=[settings], id="cycle",
                      seconds=settings.cycle_interval_s, max_instances=1, coalesce=True)
    scheduler.add_job(watch_job, "interval", args=[settings], id="watch",
                      seconds=settings.watch_interval_s, max_instances=1, coalesce=True)
    return scheduler
