"""Prometheus gauges of the live watch, computed when /metrics is scraped (at most once
every `ttl_s`), over the window the worker judges by: the last 14 days, per adapter. A
store that cannot be read leaves them out (logged); the other metrics still answer."""

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from feedback.db import session_scope
from feedback.queries.watch import WatchReport, watch_report
from flywheel.settings import Settings

log = logging.getLogger(__name__)

FIGURES = {  # summary key -> (gauge name, help)
    "thumbs_up_rate": ("flywheel_watch_thumbs_up_rate", "Share of thumbs up on its answers"),
    "flag_rate": ("flywheel_watch_flag_rate", "Share of its answers flagged"),
    "mean_length": ("flywheel_watch_answer_length", "Mean answer length in tokens"),
    "degenerate_rate": ("flywheel_watch_degenerate_rate",
                        "Share of its answers empty or degenerate"),
    "reward_mean": ("flywheel_watch_reward_mean",
                    "The current reward model's mean score of its answers"),
    "answers": ("flywheel_watch_answers", "Answers it served"),
}


class WatchGauges(Collector):
    def __init__(self, db: Engine, settings: Settings, *, ttl_s: float = 30.0) -> None:
        self.db, self.settings, self.ttl_s = db, settings, ttl_s
        self._report: WatchReport | None = None
        self._at = -float("inf")

    def report(self) -> WatchReport:
        if time.monotonic() - self._at > self.ttl_s:
            with session_scope(self.db) as session:
                self._report = watch_report(
                    session, data_dir=self.settings.data_dir, bucket="day",
                    rollback_min_votes=self.settings.auto_rollback_min_votes,
                    rollback_alpha=self.settings.auto_rollback_alpha)
            self._at = time.monotonic()
        return self._report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            report = self.report()
        except SQLAlchemyError:  # the other metrics still answer
            log.exception("the watch gauges could not be computed")
            return
        for key, (name, text) in FIGURES.items():
            gauge = GaugeMetricFamily(name, f"{text}, last 14 days", labels=["adapter"])
            for version, totals in sorted(report.totals.items()):
                value = totals.summary()[key]
                if value is not None:
                    gauge.add_metric([version], value)
            yield gauge
        for name, verdict, text in (
                ("flywheel_watch_reward_hacking_alarm", report.alarm,
                 "1 while the reward model scores the live adapter higher than its "
                 "predecessor but people do not"),
                ("flywheel_watch_rollback_due", report.rollback,
                 "1 while the live adapter's thumbs-up rate is significantly below its "
                 "predecessor's")):
            gauge = GaugeMetricFamily(name, text, labels=["adapter"])
            if report.live is not None:
                gauge.add_metric([report.live], float(verdict.raised))
            yield gauge
