"""The operator console's live-watch panel in a real browser: the alarm and the rollback
verdict after a promotion people like less, a chart per figure with a line per adapter,
and the totals; days by default, or hours."""

from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from feedback.db import session_scope
from feedback.models import Message, utcnow
from tests.feedback.queries.test_watch import crowd
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def crowded(live) -> None:
    """The crowd's answers spread over a week: policy-v1's over its first four days,
    policy-v2's over the last three (the latest of each in the current hour)."""
    with session_scope(live.app.state.db) as session:
        crowd(session, live.app.state.settings.data_dir)
        now = utcnow()
        for version, days in (("policy-v1", range(6, 2, -1)), ("policy-v2", range(2, -1, -1))):
            answers = session.exec(select(Message).where(Message.adapter_version == version)
                                   .order_by(Message.id)).all()
            for i, message in enumerate(answers[:-1]):
                message.created_at = now - timedelta(days=days[i % len(days)], hours=i % 5)
                session.add(message)


def test_the_panel_shows_the_alarm_charts_and_totals(page, live, operator_key, crowded,
                                                      tmp_path):
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(operator_key)
    page.get_by_role("button", name="Connect").click()
    panel = page.locator("#watch")
    expect(page.locator("#watch-section")).to_be_visible()
    expect(panel.locator('[data-verdict="alarm"]')).to_have_attribute("data-raised", "true")
    expect(panel.locator('[data-verdict="alarm"]')).to_contain_text(
        "Reward-hacking alarm: the reward model scores it higher")
    expect(panel.locator('[data-verdict="rollback"]')).to_contain_text(
        "Rollback due: thumbs-up rate fell")
    expect(panel).to_contain_text("Live: policy-v2, against policy-v1. Reward model: rm-0001.")
    charts = panel.locator("svg.watch-chart")
    expect(charts).to_have_count(5)
    # Per day, each adapter's days in a row make a line.
    lines = panel.locator('svg[data-figure="thumbs_up_rate"] polyline')
    expect(lines).to_have_count(2)
    expect(lines.nth(0)).to_have_attribute("data-adapter", "policy-v1")
    rows = panel.locator("table.watch-totals tbody tr")
    expect(rows.locator("th")).to_have_text([" policy-v1", " policy-v2 (live)"])
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("80")
    expect(panel.locator('svg[data-figure="reward_mean"]')).to_have_attribute(
        "aria-label", "Reward-model score per day, per adapter")
    page.evaluate("document.getElementById('watch-section').scrollIntoView()")
    assert screenshot(page, "watch.png", tmp_path).stat().st_size > 10_000
    # Per hour (the last 48), policy-v1's answers are out of the window but one.
    page.locator("#watch-bucket").select_option("hour")
    expect(panel.locator('svg[data-figure="reward_mean"]')).to_have_attribute(
        "aria-label", "Reward-model score per hour, per adapter")
    expect(panel.locator('[data-verdict="alarm"]')).to_contain_text("too few scored answers")
    assert page.errors == []
