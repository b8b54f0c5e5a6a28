"""The operator console marks the reward models and adapters trained on data of a user
who was erased since, so an operator knows what to retrain."""

import pytest
from playwright.sync_api import expect

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import reward_models as rq

pytestmark = pytest.mark.slow


def test_what_trained_on_erased_data_carries_a_mark(page, live, operator_key):
    with session_scope(live.app.state.db) as session:
        for version in ("rm-0001", "rm-0002"):
            rq.register_reward_model(session, version=version, path=f"/rm/{version}",
                                     backbone="minilm", actor="scheduler")
        for version in ("policy-v1", "policy-v2"):
            registry.register_adapter(session, version=version, base_model="demo",
                                      path=f"/a/{version}", sha256="0" * 64)
        rq.mark_trained_on_erased_data(session, versions=["rm-0002"], actor="root")
        registry.mark_trained_on_erased_data(session, versions=["policy-v2"], actor="root")

    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(operator_key)
    page.get_by_role("button", name="Connect").click()

    for table, marked, clean in (("#reward-models", "rm-0002", "rm-0001"),
                                 ("#adapters", "policy-v2", "policy-v1")):
        mark = page.locator(f'{table} tr[data-version="{marked}"] .erased-data')
        expect(mark).to_have_text("trained on erased data")
        expect(mark).to_have_attribute("title", "Its training data included a user who has "
                                       "since been erased: retrain it")
        expect(page.locator(f'{table} tr[data-version="{clean}"] .erased-data')).to_have_count(0)
    assert page.errors == []
