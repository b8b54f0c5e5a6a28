"""The operator console's leaderboard panel in a real browser: a chart of each version's
rating with its interval and a table, best first; an empty leaderboard says why."""

import random
import re

import pytest
from playwright.sync_api import expect

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import users, votes
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow

# Battles: (first, second, P(first wins)); None is the base model.
MATCHUPS = [("policy-v1", None, 0.7), ("policy-v2", "policy-v1", 0.6),
            ("policy-v2", None, 0.8), ("policy-v3", "policy-v2", 0.35)]


@pytest.fixture(scope="module")
def battles(live) -> None:
    """policy-v1 retired, policy-v2 live, policy-v3 a candidate; 240 simulated battles."""
    rng = random.Random(3)
    with session_scope(live.app.state.db) as session:
        for version, parent in (("policy-v1", None), ("policy-v2", "policy-v1"),
                                ("policy-v3", "policy-v2")):
            registry.register_adapter(session, version=version, base_model="demo",
                                      path=f"/adapters/{version}", sha256="0" * 64,
                                      parent_version=parent, status="candidate")
        for version in ("policy-v1", "policy-v2"):
            registry.set_adapter_status(session, version=version, status="approved",
                                        actor="ops")
            registry.promote(session, version=version, actor="ops")
        judge = users.create_user(session, handle="judge")
        for i in range(240):
            first, second, p_first = MATCHUPS[i % len(MATCHUPS)]
            conversation = convs.create_conversation(session, user_id=judge.id)
            prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                       content="Tell me about my cat.")
            ids = [convs.add_message(session, conversation_id=conversation.id,
                                     role="assistant", content="it is kind.",
                                     parent_id=prompt.id, adapter_version=v).id
                   for v in (first, second)]
            comparison = votes.create_comparison(session, user_id=judge.id,
                                                 prompt_message_id=prompt.id, candidate_ids=ids)
            draw = rng.random()
            choice = "tie" if draw < 0.08 else "a" if rng.random() < p_first else "b"
            votes.record_choice(session, comparison_id=comparison.id, user_id=judge.id,
                                choice=choice)


def _connect(page, live, key: str) -> None:
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#leaderboard-section")).to_be_visible()


def test_an_empty_leaderboard_says_why(page, live, operator_key):
    page.route("**/api/leaderboard", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body='{"anchor": null, "anchor_rating": 1000, "battles": 0, "level": 0.95, '
             '"resamples": 1000, "standings": []}'))
    _connect(page, live, operator_key)
    expect(page.locator("#leaderboard")).to_contain_text("No side-by-side battles decided yet")
    assert page.errors == []


def test_the_panel_charts_and_tables_every_version_best_first(page, live, operator_key,
                                                              battles, tmp_path):
    _connect(page, live, operator_key)
    rows = page.locator("#leaderboard table tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.locator("th")).to_have_text(["policy-v2", re.compile(r"policy-v[13]"),
                                             re.compile(r"policy-v[13]"), "base"])
    ratings = [int(t) for t in rows.locator("td:nth-child(3)").all_inner_texts()]
    assert ratings == sorted(ratings, reverse=True) and ratings[-1] == 1000
    expect(page.locator('#leaderboard tr[data-version="base"] td')).to_have_text(
        ["4", "1000", "1000 to 1000", "120", re.compile(r"\d+ / \d+ / \d+"), "–"])
    live_row = page.locator('#leaderboard tr[data-version="policy-v2"]')
    expect(live_row.locator(".status-pill")).to_have_text("live")
    expect(live_row.locator("td").nth(3)).to_have_text("180")
    chart = page.locator("#leaderboard svg.leaderboard-chart")
    expect(chart.locator("g.standing")).to_have_count(4)
    expect(chart).to_have_attribute("aria-label", re.compile(r"policy-v2 leads at \d+"))
    expect(page.locator("#leaderboard figcaption")).to_contain_text(
        "from 240 side-by-side battles, with 95% bootstrap intervals")
    # Each interval line spans the dot of its rating.
    for version in ("policy-v1", "policy-v2", "policy-v3"):
        group = chart.locator(f'g.standing[data-version="{version}"]')
        line, dot = group.locator("line"), group.locator("circle")
        x1, x2, cx = (float(line.get_attribute("x1")), float(line.get_attribute("x2")),
                      float(dot.get_attribute("cx")))
        assert x1 < cx < x2
    page.evaluate("document.getElementById('leaderboard-section').scrollIntoView()")
    assert screenshot(page, "leaderboard.png", tmp_path).stat().st_size > 10_000
    assert page.errors == []

