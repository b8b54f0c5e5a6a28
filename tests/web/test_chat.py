"""The chat page in a real browser: streaming, thumbs, side-by-side picks, flags,
rewrites, regenerate, safe rendering, phone width."""

import re

import pytest
from playwright.sync_api import expect
from sqlmodel import select

from feedback.models import Comparison, Flag, Message, Rating, Rewrite
from feedback.queries import conversations as convs
from feedback.queries import users
from tests.web.conftest import screenshot

pytestmark = pytest.mark.slow

ANSWER = "#messages .message.assistant[data-message-id]"
HOSTILE = ('<script>window.__pwned = "script"</script> '
           '<img src="x" onerror="window.__pwned = \'img\'"> '
           '[click](javascript:window.__pwned=1) **bold** `<b>code</b>`')


def send(page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.keyboard.press("Enter")


def token_frames(page) -> list[str]:
    """Record the token frames the page's websocket receives."""
    tokens: list[str] = []

    def on_socket(ws):
        ws.on("framereceived", lambda payload: tokens.append(payload)
              if '"type":"token"' in payload.replace(" ", "") else None)
    page.on("websocket", on_socket)
    return tokens


def answer_id(page, index: int = -1) -> int:
    return int(page.locator(ANSWER).nth(index).get_attribute("data-message-id"))


def test_send_streams_then_thumb_is_stored(page, live, db):
    tokens = token_frames(page)
    page.goto(live.url)
    send(page, "Tell me about the sea")
    expect(page.locator("#messages .message.user").first).to_contain_text("Tell me about the sea")
    answer = page.locator(ANSWER)
    expect(answer).to_have_count(1)
    expect(page.locator("#send")).to_be_visible()  # the Stop button is gone again
    assert len(tokens) > 1, "the answer came in one piece, not streamed"
    message_id = answer_id(page)
    with db() as session:
        stored = session.get(Message, message_id)
        assert answer.locator(".content").inner_text().strip() == stored.content.strip()
    expect(page.locator("#conversations li")).to_have_count(1)

    answer.get_by_role("button", name="Good answer").click()
    dialog = page.locator("#rating-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("helpful").check()
    dialog.get_by_label("Comment (optional)").fill("nice and short")
    dialog.get_by_role("button", name="Save rating").click()
    expect(answer.locator(".feedback-note")).to_have_text("Rating saved.")
    expect(answer.get_by_role("button", name="Good answer")).to_have_attribute(
        "aria-pressed", "true")
    with db() as session:
        rating = session.exec(select(Rating).where(Rating.message_id == message_id)).one()
        assert (rating.thumb, rating.reasons, rating.comment) == (1, ["helpful"], "nice and short")
    assert page.errors == []


def test_an_empty_chat_on_the_demo_model_offers_questions_it_can_answer(page, live, db):
    page.goto(live.url)
    suggestions = page.locator("#empty-state .suggestions button")
    expect(suggestions).to_have_count(3)
    expect(page.locator("#empty-state")).to_contain_text("built-in demo model")

    suggestions.first.click()
    expect(page.locator("#messages .message.user").first).to_contain_text(
        "Tell me about the weather.")
    expect(page.locator(ANSWER)).to_have_count(1)
    expect(page.locator("#empty-state")).to_have_count(0)
    with db() as session:
        assert session.get(Message, answer_id(page)).parent_id is not None

    page.get_by_role("button", name="+ New chat").click()
    expect(suggestions).to_have_count(3)  # a new chat offers them again
    assert page.errors == []


def test_side_by_side_pick_is_stored(page, live, db):
    page.goto(live.url)
    page.get_by_label("Compare two answers").check()
    send(page, "Which is the best colour?")
    bar = page.get_by_role("group", name="Which answer is better?")
    expect(bar).to_be_visible()
    expect(page.locator(".side-by-side .message.assistant")).to_have_count(2)
    bar.get_by_role("button", name="B is better").click()
    expect(bar.locator(".pick-result")).to_contain_text("A was base, B was base")
    comparison_id = int(bar.get_attribute("data-comparison-id"))
    with db() as session:
        assert session.get(Comparison, comparison_id).choice == "b"
    # the chat goes on from the picked answer
    b_id = int(page.locator(".side-by-side .message.assistant").nth(1)
               .get_attribute("data-message-id"))
    page.get_by_label("Compare two answers").uncheck()
    send(page, "Why?")
    expect(page.locator(f"{ANSWER}:not(.side-by-side *)")).to_have_count(1)
    with db() as session:
        question = session.exec(select(Message).where(Message.content == "Why?")).one()
        assert question.parent_id == b_id
    assert page.errors == []


def test_flag_rewrite_and_regenerate(page, live, db):
    page.goto(live.url)
    send(page, "Say something")
    answer = page.locator(ANSWER)
    expect(answer).to_have_count(1)
    message_id = answer_id(page)

    answer.get_by_role("button", name="Flag").click()
    dialog = page.locator("#flag-dialog")
    dialog.get_by_label("Category").select_option("misinformation")
    dialog.get_by_label("Comment (optional)").fill("made up")
    dialog.get_by_role("button", name="Flag").click()
    expect(answer.locator(".feedback-note")).to_have_text("Flagged. Thank you.")

    answer.get_by_role("button", name="Rewrite").click()
    page.get_by_label("What the answer should have been").fill("A **better** answer.")
    page.get_by_role("button", name="Save rewrite").click()
    expect(answer.locator(".feedback-note")).to_have_text("Rewrite saved. Thank you!")
    with db() as session:
        flag = session.exec(select(Flag).where(Flag.message_id == message_id)).one()
        assert (flag.category, flag.comment) == ("misinformation", "made up")
        rewrite = session.exec(select(Rewrite).where(Rewrite.message_id == message_id)).one()
        assert rewrite.content == "A **better** answer."

    send(page, "And more")
    expect(page.locator(ANSWER)).to_have_count(2)
    second_question = page.locator("#messages .message.user").nth(1)
    expect(page.locator(ANSWER).first.locator(".regenerate")).to_be_hidden()
    page.locator(ANSWER).nth(1).get_by_role("button", name="Regenerate").click()
    expect(page.locator(ANSWER)).to_have_count(3)
    with db() as session:
        asked = session.exec(select(Message).where(Message.content == "And more")).all()
        assert len(asked) == 2 and asked[0].parent_id == asked[1].parent_id == message_id
    assert second_question.is_visible()
    assert page.errors == []


def test_hostile_markup_renders_as_text(page, live, db):
    page.goto(live.url)
    send(page, HOSTILE)  # the user's own message
    expect(page.locator(ANSWER)).to_have_count(1)
    conversation_id = int(re.search(r"#c(\d+)", page.url).group(1))
    # and an assistant answer holding the same markup, as a model could write it
    with db() as session:
        last = answer_id(page)
        convs.add_message(session, conversation_id=conversation_id, role="user",
                          content="again", parent_id=last)
        question = session.exec(select(Message).where(Message.content == "again")).one()
        convs.add_message(session, conversation_id=conversation_id, role="assistant",
                          content=f"# Title\n\n{HOSTILE}\n\n- one\n- two\n\n```\n<i>x</i>\n```",
                          parent_id=question.id)
    page.reload()
    answer = page.locator(ANSWER).last
    expect(answer).to_contain_text('<script>window.__pwned = "script"</script>')
    expect(answer).to_contain_text("onerror=")
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("li")).to_have_count(2)
    expect(page.locator("#messages .message.user").first).to_contain_text("<img src=")
    messages = page.locator("#messages")
    for tag in ("script", "img", "b", "i"):
        expect(messages.locator(tag)).to_have_count(0)
    expect(messages.locator("a")).to_have_count(0)  # javascript: links stay text
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []


def test_phone_width_and_keyboard(browser, live):
    context = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(live.url)
        expect(page.get_by_role("button", name="Conversations")).to_be_visible()
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.get_by_label("Message", exact=True)).to_be_focused()
        page.keyboard.type("Hi from a phone")
        page.keyboard.press("Enter")
        expect(page.locator(ANSWER)).to_have_count(1)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways ({width}px)"
        page.get_by_role("button", name="Conversations").click()
        expect(page.locator("#sidebar")).to_be_visible()
        expect(page.locator("#conversations li")).to_have_count(1)
    finally:
        context.close()


def test_rate_limit_is_shown(page, live):
    """A rate-limit error frame (injected: the server's limit is high for the tests)."""
    page.route_web_socket("**/api/chat", lambda ws: ws.on_message(lambda _: ws.send(
        '{"type": "error", "error": {"message": "rate limit exceeded; retry in 7 s", '
        '"type": "rate_limit_error", "code": "rate_limit_exceeded"}}')))
    page.goto(live.url)
    send(page, "too fast")
    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("Slow down: rate limit exceeded; retry in 7 s")
    expect(banner.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.locator("#send")).to_be_visible()


def test_chat_screenshot(page, live, tmp_path):
    page.goto(live.url)
    send(page, "Write a haiku about **rivers**, with a list:\n- water\n- stones")
    expect(page.locator(ANSWER)).to_have_count(1)
    page.get_by_label("Compare two answers").check()
    send(page, "Now one about mountains")
    expect(page.get_by_role("group", name="Which answer is better?")).to_be_visible()
    page.locator(ANSWER).first.get_by_role("button", name="Good answer").focus()
    assert screenshot(page, "chat.png", tmp_path).stat().st_size > 10_000


def test_user_handle_shown(page, live, db):
    page.goto(live.url)
    handle = page.locator("#whoami")
    expect(handle).to_have_text(re.compile(r"anon-"))
    with db() as session:
        assert users.get_user_by_handle(session, handle=handle.inner_text()) is not None
