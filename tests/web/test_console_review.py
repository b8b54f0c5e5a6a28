"""The operator console's review queue in a real browser, resolved from the keyboard alone:
j/k to move, d dismiss, r redact (through the confirmation dialog), x v exclude a vote,
a accept, x u 2 exclude a disagreement's second voter; and the decisions listed after."""

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from feedback.models import Flag, Message, ReviewItem, TrainingExclusion
from feedback.queries import conversations, users, votes
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seeded(live) -> dict[str, int]:
    """Two flags, a commented thumbs-down, a rewrite, and a thumb up and down on one answer
    (a disagreement): five items, in that order."""
    from feedback.db import session_scope

    with session_scope(live.app.state.db) as s:
        alice, bob, carol = (users.create_user(s, handle=h) for h in ("alice", "bob", "carol"))
        chat = conversations.create_conversation(s, user_id=alice.id)
        prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                           content="Tell me about my <b>cat</b>.")
        kind, rude, odd = (conversations.add_message(
            s, conversation_id=chat.id, role="assistant", content=text, parent_id=prompt.id)
            for text in ("It is kind and calm.", "It is vile, like you.",
                         "My card is 4111 1111 1111 1111."))
        votes.add_flag(s, message_id=kind.id, user_id=bob.id, category="other",
                       comment="just testing")
        votes.add_flag(s, message_id=odd.id, user_id=bob.id, category="privacy",
                       comment="a card number")
        votes.upsert_rating(s, message_id=rude.id, user_id=alice.id, thumb=-1,
                            comment="insulting")
        votes.add_rewrite(s, message_id=rude.id, user_id=alice.id,
                          content="It is a gentle soul.")
        votes.upsert_rating(s, message_id=kind.id, user_id=bob.id, thumb=1)
        votes.upsert_rating(s, message_id=kind.id, user_id=carol.id, thumb=-1)
        return {"odd": odd.id, "carol": carol.id}


def test_the_queue_is_resolved_from_the_keyboard(page, live, db, operator_key, seeded,
                                                 tmp_path):
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(operator_key)
    page.get_by_role("button", name="Connect").click()
    items = page.locator("#review .review-item")
    expect(items).to_have_count(5)
    expect(items.first).to_have_class(
        "fb-item review-item kind-flag selected")  # the oldest item is selected
    expect(items.first).to_contain_text("Tell me about my <b>cat</b>.")  # text, not markup
    expect(items.nth(4)).to_contain_text("bob: up")
    expect(items.nth(4)).to_contain_text("carol: down")
    expect(page.locator("#review .review-keys")).to_contain_text("redact the text")
    queue = page.locator("#review .review-list")
    queue.focus()
    page.keyboard.press("j")
    expect(items.nth(1)).to_have_attribute("aria-current", "true")
    page.keyboard.press("k")
    expect(items.first).to_have_attribute("aria-current", "true")
    page.locator("#review .review-keys summary").click()
    queue.focus()
    page.locator("#review-title").evaluate("(title) => title.scrollIntoView()")
    screenshot(page, "review.png", tmp_path)

    page.keyboard.press("d")  # the "just testing" flag
    expect(items).to_have_count(4)
    page.keyboard.press("r")  # the card number
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Redact this item's text?")
    page.keyboard.press("Enter")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("insulting")
    page.keyboard.press("x")
    expect(page.locator("#review .review-hint")).to_contain_text("m the message")
    page.keyboard.press("v")
    expect(items).to_have_count(2)
    page.keyboard.press("a")  # the rewrite
    expect(items).to_have_count(1)
    page.keyboard.press("x")
    page.keyboard.press("u")
    expect(page.locator("#review .review-hint")).to_contain_text("1 bob, 2 carol")
    page.keyboard.press("2")
    expect(page.locator("#review .review-list")).to_contain_text("Nothing to review.")

    page.locator("#review select[name=status]").select_option("")
    expect(items).to_have_count(5)
    expect(items.first).to_contain_text("dismissed by operator-web")
    expect(items.nth(1)).to_contain_text("redacted by operator-web")
    expect(items.nth(4)).to_contain_text("excluded (user) by operator-web")
    with db() as s:
        assert [i.status for i in s.exec(select(ReviewItem).order_by(ReviewItem.id))] == [
            "dismissed", "redacted", "excluded", "accepted", "excluded"]
        assert [f.status for f in s.exec(select(Flag).order_by(Flag.id))] == [
            "dismissed", "resolved"]
        assert s.get(Message, seeded["odd"]).content == "[redacted]"
        scopes = {(e.scope, e.user_id) for e in s.exec(select(TrainingExclusion))}
        assert ("user", seeded["carol"]) in scopes and ("rating", None) in scopes
    assert page.errors == []
