"""The operator console's review panels in a real browser: the feedback browser filtered down
to a thumbs-down and to a flag (hostile markup in messages shown as text, never run), the
feedback-volume and reward-model charts drawn from real rows, the canary share set through
its control, and the annotators panel (its route may be absent: "not available")."""

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import expect

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import conversations, runs, users, votes
from feedback.queries.activity import feedback_counts
from flywheel.adapter_store import AdapterStore
from tests.server.hotswap_fixtures import AdapterMaker, register
from tests.web.conftest import screenshot
from tests.web.test_console import report

pytestmark = pytest.mark.slow

SETTINGS = {"adapter_poll_s": 0.5}
LIVE, CANDIDATE = "policy-v1", "policy-v2"
PROMPT = "Review this: <script>window.pwned = 1</script>"
BAD_ANSWER = 'Sure! <img src=x onerror="window.pwned = 1"> **done**'
ANNOTATORS = {"reward_model": "rm-0003", "annotators": [
    {"user_id": 1, "handle": "maya", "votes": 212, "consensus_agreement": 0.83,
     "consensus_items": 64, "reward_model_agreement": 0.71, "pattern": None, "weight": 1.0},
    {"user_id": 2, "handle": "clicky", "votes": 340, "consensus_agreement": 0.49,
     "consensus_items": 80, "reward_model_agreement": 0.51, "pattern": "always_a",
     "weight": 0.2},
    {"user_id": 3, "handle": "theo", "votes": 9, "consensus_agreement": None,
     "consensus_items": 0, "reward_model_agreement": None, "pattern": None, "weight": 1.0}]}


@pytest.fixture(scope="module")
def adapters(live, models_dir: Path) -> None:
    store = AdapterStore(live.app.state.settings.adapters_dir)
    maker = AdapterMaker(models_dir)
    register(live.app.state.db, maker.make(store, LIVE, seed=3), status="live")
    register(live.app.state.db, maker.make(store, CANDIDATE, seed=4), status="candidate",
             parent=LIVE)
    with session_scope(live.app.state.db) as session:
        registry.set_eval_report(session, version=CANDIDATE, report=report(CANDIDATE))


def _stamp(vote, moment: datetime) -> None:
    for name in ("created_at", "updated_at"):
        if hasattr(vote, name):
            setattr(vote, name, moment)


@pytest.fixture(scope="module")
def seeded(live, adapters) -> dict[str, int]:
    """Two weeks of votes from a small crowd, the hostile thumbs-down and flag newest, and
    three cycles' reward models."""
    rng = random.Random(5)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with session_scope(live.app.state.db) as s:
        crowd = [users.create_user(s, handle=h) for h in ("maya", "clicky", "theo", "ana")]
        for day in range(14, 2, -1):  # none in the last 48 hours
            for n in range(rng.randint(2, 4 + 14 - day)):
                who = rng.choice(crowd)
                chat = conversations.create_conversation(s, user_id=who.id)
                prompt = conversations.add_message(
                    s, conversation_id=chat.id, role="user",
                    content=f"How do I {rng.choice(['sort a list', 'boil an egg', 'say no'])}?")
                a, b = (conversations.add_message(
                    s, conversation_id=chat.id, role="assistant", parent_id=prompt.id,
                    content=f"Answer {n} from {v or 'base'}", adapter_version=v)
                    for v in (LIVE, CANDIDATE))
                moment = now - timedelta(days=day, hours=rng.randint(0, 20))
                vote = rng.choice(["rating", "rating", "comparison", "rewrite", "flag"])
                if vote == "rating":
                    made = votes.upsert_rating(s, message_id=a.id, user_id=who.id,
                                               thumb=rng.choice([1, 1, -1]))
                elif vote == "comparison":
                    made = votes.create_comparison(s, user_id=who.id, candidate_ids=[a.id, b.id],
                                                   prompt_message_id=prompt.id)
                    votes.record_choice(s, comparison_id=made.id, user_id=who.id,
                                        choice=rng.choice("ab"))
                elif vote == "rewrite":
                    made = votes.add_rewrite(s, message_id=b.id, user_id=who.id,
                                             content="A clearer answer.")
                else:
                    made = votes.add_flag(s, message_id=b.id, user_id=who.id, category="other")
                _stamp(made, moment)
                s.add(made)
        chat = conversations.create_conversation(s, user_id=crowd[0].id)
        prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                           content=PROMPT)
        answer = conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                           parent_id=prompt.id, content=BAD_ANSWER,
                                           adapter_version=CANDIDATE)
        down = votes.upsert_rating(s, message_id=answer.id, user_id=crowd[0].id, thumb=-1,
                                   reasons=["unsafe"], comment="<b>not ok</b>")
        flag = votes.add_flag(s, message_id=answer.id, user_id=crowd[2].id,
                              category="harmful", comment="markup in the answer")
        _stamp(down, now - timedelta(minutes=5))
        _stamp(flag, now - timedelta(minutes=2))
        s.add_all([down, flag])
        for i, (accuracy, kept) in enumerate([(0.58, True), (0.63, True), (0.61, False)]):
            run = runs.start_run(s, kind="cycle", config={"seed": i}, data_window={})
            runs.finish_run(s, run_id=run.id, metrics={
                "reward": {"accuracy": accuracy, "version": f"rm-{i + 1:04d}",
                           "replaced_current": kept, "heldout_pairs": 120 + 40 * i},
                "ppo": {"steps": [{"step": k, "reward": 0.1 * k - 0.02 * i, "kl": 0.01 * k * k}
                                  for k in range(10)]}})
        registry.set_traffic_share(s, version=CANDIDATE, share=0.1)
    with session_scope(live.app.state.db) as s:
        total = sum(feedback_counts(s).values())
    return {"votes": total, "down": down.id, "flag": flag.id}


MISSING = {"error": {"message": "Not Found", "type": "not_found_error", "code": None}}


def _connect(page, live, key: str, annotators: dict | None = MISSING) -> None:
    """Open the console with the key. `annotators` stands in for GET /api/annotators
    (by default a server without it: 404); None lets the real route answer."""
    if annotators is not None:
        page.route("**/api/annotators", lambda route: route.fulfill(
            status=404 if annotators is MISSING else 200, content_type="application/json",
            body=json.dumps(annotators)))
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#feedback-section")).to_be_visible()


def test_feedback_browser_filters_to_thumbs_down_and_flag(page, live, operator_key, seeded):
    _connect(page, live, operator_key)
    items = page.locator("#fb-items .fb-item")
    expect(items.first).to_be_visible()
    filters = page.locator("#fb-filters")

    filters.get_by_label("Vote").select_option("down")
    filters.get_by_role("button", name="Filter").click()
    expect(items.first).to_have_attribute("data-id", str(seeded["down"]))
    down = items.first
    expect(down).to_contain_text("Thumbs down · unsafe")
    expect(down.locator(".fb-prompt .fb-text")).to_have_text(PROMPT)  # shown as text
    expect(down.locator(".fb-answer .fb-text")).to_have_text(BAD_ANSWER)
    expect(down).to_contain_text("Comment: <b>not ok</b>")
    expect(down).to_contain_text(CANDIDATE)
    for card in items.all():
        expect(card).to_have_attribute("data-kind", "rating")
        expect(card).to_contain_text("Thumbs down")

    filters.get_by_label("Flag category").select_option("harmful")  # implies flags
    expect(filters.get_by_label("Vote")).to_have_value("flag")
    filters.get_by_role("button", name="Filter").click()
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-id", str(seeded["flag"]))
    expect(items.first).to_contain_text("Flagged: harmful")
    expect(items.first).to_contain_text("theo")

    filters.get_by_label("Vote").select_option("")
    filters.get_by_label("Adapter").fill(CANDIDATE)
    filters.get_by_label("User").fill("nobody-at-all")
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator("#fb-status")).to_contain_text("no user with handle")

    assert page.locator("#fb-items img, #fb-items script").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.errors == []


def test_feedback_browser_pages_through_older_feedback(page, live, operator_key, seeded):
    _connect(page, live, operator_key)
    items = page.locator("#fb-items .fb-item")
    expect(items).to_have_count(20)
    page.get_by_role("button", name="Show older feedback").click()
    expect(items).to_have_count(min(40, seeded["votes"]))
    ids = [(c.get_attribute("data-kind"), c.get_attribute("data-id")) for c in items.all()]
    assert len(set(ids)) == len(ids)


def test_volume_and_reward_model_charts(page, live, operator_key, seeded):
    _connect(page, live, operator_key)
    chart = page.locator("svg.volume-chart")
    expect(chart).to_have_attribute("data-total", str(seeded["votes"]))
    assert chart.locator("rect.bar").count() >= 14
    expect(page.locator("#volume-chart .legend")).to_contain_text("Flags")
    page.locator("#volume-bucket").select_option("hour")
    expect(page.locator("#volume-chart figcaption")).to_contain_text("per hour")
    expect(chart).to_have_attribute("data-total", "2")  # the last 48 hours: the review pair

    accuracy = page.locator("svg.accuracy-chart")
    expect(accuracy).to_contain_text("rm-0002")
    expect(accuracy).to_contain_text("63.0%")
    expect(accuracy.locator("rect.muted-bar")).to_have_count(1)  # rm-0003 was not kept
    assert page.errors == []


def test_canary_control_sets_the_share(page, live, operator_key, seeded):
    _connect(page, live, operator_key)
    row = page.locator(f'#adapters tr[data-version="{CANDIDATE}"]')
    expect(row.locator(".traffic-share")).to_have_text("10%")
    expect(page.locator(f'#adapters tr[data-version="{LIVE}"] .share-input')).to_have_count(0)

    share = row.get_by_label(f"Canary share for {CANDIDATE} (%)")
    share.fill("25")
    row.get_by_role("button", name="Set share").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("canary share to 25%")
    dialog.get_by_role("button", name="Cancel").click()
    expect(row.locator(".traffic-share")).to_have_text("10%")

    row.get_by_role("button", name="Set share").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(row.locator(".traffic-share")).to_have_text("25%")
    response = page.request.get(f"{live.url}/api/adapters/{CANDIDATE}",
                                headers={"Authorization": f"Bearer {operator_key}"})
    assert response.json()["traffic_share"] == pytest.approx(0.25)

    share = row.get_by_label(f"Canary share for {CANDIDATE} (%)")
    share.fill("100")  # with nothing else sharing, all of it is allowed
    row.get_by_role("button", name="Set share").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(row.locator(".traffic-share")).to_have_text("100%")
    share = row.get_by_label(f"Canary share for {CANDIDATE} (%)")
    share.fill("10")
    row.get_by_role("button", name="Set share").click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(row.locator(".traffic-share")).to_have_text("10%")
    assert page.errors == []


def test_annotators_panel_not_available_without_its_route(page, live, operator_key):
    _connect(page, live, operator_key)
    expect(page.locator("#annotators")).to_contain_text("not available")
    expect(page.locator("#adapters table.data")).to_be_visible()  # the rest works


def test_annotators_panel_reads_the_route(page, live, operator_key, seeded):
    _connect(page, live, operator_key, annotators=None)
    rows = page.locator("#annotators table tbody tr")
    expect(rows.filter(has_text="maya")).to_have_count(1)
    for handle in ("clicky", "theo", "ana"):
        expect(rows.filter(has_text=handle)).to_have_count(1)
    assert page.errors == []


def test_annotators_panel_highlights_careless_voters(page, live, operator_key, seeded,
                                                     tmp_path):
    _connect(page, live, operator_key, annotators=ANNOTATORS)
    table = page.locator("#annotators table")
    careless = table.locator("tr.careless")
    expect(careless).to_have_count(1)
    expect(careless).to_contain_text("clicky")
    expect(careless).to_contain_text("always picks A")
    expect(careless).to_contain_text("0.20")
    maya = table.locator('tr[data-user-id="1"]')
    expect(maya).to_contain_text("83% of 64")
    expect(maya).to_contain_text("71%")
    expect(table.locator('tr[data-user-id="3"]')).to_contain_text("–")
    expect(page.locator("#annotators")).to_contain_text("rm-0003")

    careless.get_by_role("button", name="clicky").click()  # that user's feedback
    expect(page.locator("#fb-filters").get_by_label("User")).to_have_value("clicky")
    cards = page.locator("#fb-items .fb-item")
    expect(cards.filter(has_not_text="clicky")).to_have_count(0)
    expect(cards.first).to_be_visible()

    page.locator("#fb-filters").get_by_label("User").fill("")
    page.locator("#fb-filters").get_by_label("Vote").select_option("down")
    page.locator("#fb-filters").get_by_role("button", name="Filter").click()
    expect(cards.first).to_have_attribute("data-id", str(seeded["down"]))
    page.locator(f'#adapters tr[data-version="{CANDIDATE}"]').scroll_into_view_if_needed()
    page.set_viewport_size({"width": 1280, "height": 2200})
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "console.png", tmp_path)
    assert page.errors == []
