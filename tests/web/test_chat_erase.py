"""The chat page's "Delete all my data": after a confirmation, everything the browser's
user wrote goes (DELETE /api/me), and the page starts afresh as a new anonymous user."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from feedback.queries import conversations as convs
from feedback.queries import users

pytestmark = pytest.mark.slow
ANONYMOUS = re.compile(r"^anon-")


def test_delete_all_my_data_erases_the_user_and_starts_afresh(page, live, db):
    page.goto(live.url)
    whoami = page.locator("#whoami")
    expect(whoami).to_have_text(ANONYMOUS)
    handle = whoami.inner_text()
    secret = f"gecko-{uuid.uuid4().hex}"
    with db() as session:
        user = users.get_user_by_handle(session, handle=handle)
        conversation = convs.create_conversation(session, user_id=user.id, title=secret)
        convs.add_message(session, conversation_id=conversation.id, role="user", content=secret)
    page.reload()
    expect(page.locator("#conversations li")).to_have_count(1)

    page.once("dialog", lambda dialog: dialog.dismiss())  # thought better of it
    page.get_by_role("button", name="Delete all my data").click()
    expect(page.locator("#conversations li")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete all my data").click()

    expect(whoami).not_to_have_text(handle)
    expect(whoami).to_have_text(ANONYMOUS)
    expect(page.locator("#conversations li")).to_have_count(0)
    with db() as session:
        assert users.get_user_by_handle(session, handle=handle) is None
    assert secret.encode() not in live.app.state.settings.event_log_path.read_bytes()
    assert page.errors == []
