"""The operator console's reward-models panel in a real browser: the registry's reward
models, newest first, with status, held-out accuracy and margin, pairs and parent; a
margin no better than chance marked; and a server without the route ("not available")."""

import re

import pytest
from playwright.sync_api import expect

from feedback.db import session_scope
from feedback.queries import reward_models as rq

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(live) -> None:
    """rm-0001 retired, rm-0002 current, rm-0003 rejected; an empty held-out split on
    rm-0001 (no accuracy)."""
    with session_scope(live.app.state.db) as session:
        for version, status, parent, heldout in (
                ("rm-0001", "current", None, {"accuracy": None, "pairs": 0}),
                ("rm-0002", "current", "rm-0001", {"accuracy": 0.7125, "pairs": 80,
                                                   "margin": 0.61, "margin_low": 0.2,
                                                   "margin_high": 1.06}),
                ("rm-0003", "rejected", "rm-0002", {"accuracy": 0.65, "pairs": 80,
                                                    "margin": 0.1, "margin_low": -0.05,
                                                    "margin_high": 0.25})):
            rq.register_reward_model(
                session, version=version, path=f"/data/reward_models/{version}",
                backbone="minilm", actor="scheduler", status=status, heldout=heldout,
                parent_version=parent,
                data_window={"pairs": 700, "heldout_pairs": heldout["pairs"]})


def _connect(page, live, key: str) -> None:
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#reward-models-section")).to_be_visible()


def test_the_panel_lists_the_registry(page, live, operator_key, registered):
    _connect(page, live, operator_key)
    rows = page.locator("#reward-models table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("th")).to_have_text(["rm-0003", "rm-0002", "rm-0001"])
    current = page.locator('#reward-models tr[data-version="rm-0002"]')
    expect(current.locator("td")).to_have_text(
        ["current", "71.3%", "+0.61 (+0.20 to +1.06)", "80", "700", "rm-0001",
         re.compile(r"\d")])  # created: a date
    expect(current.locator(".status-pill")).to_have_class("status-pill status-current")
    rejected = page.locator('#reward-models tr[data-version="rm-0003"] td')
    expect(rejected.nth(0)).to_have_text("rejected")
    expect(rejected.nth(2)).to_have_text("+0.10 (−0.05 to +0.25) chance")
    expect(rejected.nth(2)).to_have_class("chance")
    expect(rejected.nth(5)).to_have_text("rm-0002")
    expect(page.locator('#reward-models tr[data-version="rm-0001"] td').nth(1)).to_have_text("–")
    expect(page.locator("#reward-models")).to_contain_text("rm-0002 is current")
    assert page.errors == []


def test_a_server_without_the_route_says_so(page, live, operator_key):
    page.route("**/api/reward-models", lambda route: route.fulfill(
        status=404, content_type="application/json",
        body='{"error": {"message": "not found", "type": "not_found_error", "code": null}}'))
    _connect(page, live, operator_key)
    expect(page.locator("#reward-models")).to_contain_text("not available")
    expect(page.locator("#adapters-section")).to_be_visible()  # the rest still works
