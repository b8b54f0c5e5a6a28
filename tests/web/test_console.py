"""The operator console in a real browser: a candidate adapter with its evaluation report
is approved and promoted (each through the confirmation dialog), and the chat then
answers from it."""

from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from feedback.db import session_scope
from feedback.models import Message
from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore
from tests.server.hotswap_fixtures import AdapterMaker, register
from tests.server.support import wait_until
from trainer.evaluate import render_markdown

pytestmark = pytest.mark.slow

SETTINGS = {"adapter_poll_s": 0.2}
VERSION = "policy-web-1"


def report(version: str) -> dict:
    sample = {"prompt": "What is <b>bold</b>?", "candidate": "Strong text.",
              "baseline": ": : :", "candidate_reward": 0.8, "baseline_reward": -0.4}
    out = {"candidate": version, "baseline": "base", "prompts": 32,
           "reward": {"candidate": 0.41, "baseline": 0.12, "delta": 0.29,
                      "delta_low": 0.11, "delta_high": 0.47},
           "reward_model_win_rate": {"rate": 0.66, "low": 0.52, "high": 0.78},
           "kl_to_base": 0.84, "length": {"candidate": 21.5, "baseline": 24.0, "drift": -0.1},
           "empty_rate": 0.0, "degenerate_rate": 0.03, "samples": [sample]}
    return {**out, "markdown": render_markdown(out)}


@pytest.fixture(scope="module")
def candidate(live, models_dir: Path) -> str:
    store = AdapterStore(live.app.state.settings.adapters_dir)
    register(live.app.state.db, AdapterMaker(models_dir).make(store, VERSION, seed=7),
             status="candidate")
    with session_scope(live.app.state.db) as session:
        registry.set_eval_report(session, version=VERSION, report=report(VERSION))
    manager = live.app.state.adapters
    wait_until(lambda: VERSION in manager.candidates, 30, "the candidate to load")
    return VERSION


def test_wrong_key_is_refused(page, live):
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill("fw-not-a-key")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid API key")
    expect(page.locator("#adapters-section")).to_be_hidden()


def test_approve_promote_then_chat_answers_from_it(page, live, operator_key, candidate):
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(operator_key)
    page.get_by_role("button", name="Connect").click()
    row = page.locator(f'#adapters tr[data-version="{candidate}"]')
    expect(row).to_contain_text("candidate")
    expect(row).to_contain_text("no votes yet vs base")  # the live win rate

    report = page.locator(".adapter-report")
    report.locator("summary").click()
    expect(report).to_contain_text("reward-model win rate")
    expect(report.locator("table")).to_have_count(1)
    expect(report).to_contain_text("What is <b>bold</b>?")  # as text, never markup
    expect(report.locator(".pairs")).to_contain_text("Strong text.")

    # a cancelled confirmation changes nothing
    row.get_by_role("button", name="Approve").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Approve {candidate}?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row).to_contain_text("candidate")

    row.get_by_role("button", name="Approve").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(row.locator(".status-pill")).to_have_text("approved")
    expect(report).to_have_attribute("open", "")  # still open after the refresh

    row.get_by_role("button", name="Promote to live").click()
    expect(dialog).to_contain_text("Promote")
    dialog.get_by_role("button", name="Confirm").click()
    expect(row.locator(".status-pill")).to_have_text("live")
    assert live.app.state.adapters.live == candidate

    page.goto(live.url)
    page.get_by_label("Message", exact=True).fill("Hello, new model")
    page.keyboard.press("Enter")
    answer = page.locator("#messages .message.assistant[data-message-id]")
    expect(answer).to_have_count(1)
    expect(answer).to_have_attribute("data-adapter-version", candidate)
    with session_scope(live.app.state.db) as session:
        stored = session.get(Message, int(answer.get_attribute("data-message-id")))
        assert stored.adapter_version == candidate
        question = session.exec(select(Message).where(Message.content == "Hello, new model"))
        assert question.one().id == stored.parent_id
    assert page.errors == []


def test_training_runs_listed_with_logs(page, live, operator_key):
    from feedback.queries import runs

    with session_scope(live.app.state.db) as session:
        run = runs.start_run(session, kind="cycle", config={"lr": 1e-5}, data_window={})
        runs.record_progress(session, run_id=run.id, metrics={"ppo": {"steps": [
            {"step": i, "reward": 0.1 * i, "kl": 0.01 * i * i} for i in range(8)]}})
        run_id = run.id
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(operator_key)
    page.get_by_role("button", name="Connect").click()
    entry = page.locator(f'details.run[data-run-id="{run_id}"]')
    expect(entry).to_contain_text("running")
    entry.locator("summary").click()
    expect(entry.locator("svg.chart")).to_have_count(2)  # reward and kl over the steps
    expect(entry.locator("pre.log")).to_contain_text('"lr": 0.00001')
