"""The console's users panel in a real browser: hidden from operators; for an admin, a
user created with a key shown once, the key rotated and revoked, the user erased."""

import re

import pytest
from playwright.sync_api import expect

from feedback.db import session_scope
from feedback.queries import users
from flywheel.api_keys import hash_api_key
from tests.server.support import add_user

pytestmark = pytest.mark.slow


def _connect(page, live, key: str) -> None:
    page.goto(f"{live.url}/console.html")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#adapters-section")).to_be_visible()


def _confirm(page) -> None:
    page.locator("#confirm-ok").click()


def test_operators_do_not_see_the_panel(page, live, operator_key):
    _connect(page, live, operator_key)
    expect(page.locator("#users-section")).to_be_hidden()
    assert page.errors == []


def test_an_admin_creates_rotates_revokes_and_erases(page, live):
    _, admin_key = add_user(live.app.state.db, role="admin", handle="root")
    _connect(page, live, admin_key)
    expect(page.locator("#users-section")).to_be_visible()

    page.get_by_label("Handle").fill("dana")
    page.get_by_label("Role").select_option("operator")
    page.get_by_label("Key expires in days").fill("30")
    page.get_by_role("button", name="Create user").click()
    shown = page.locator("#users .new-key code")
    expect(shown).to_have_text(re.compile(r"^fw-"))
    first_key = shown.inner_text()
    row = page.locator('#users tr[data-user="dana"]')
    expect(row.locator("td")).to_have_text(["operator", re.compile(r"^expires "), "–",
                                            re.compile("Rotate key")])
    with session_scope(live.app.state.db) as session:
        dana = users.get_user_by_handle(session, handle="dana")
        assert dana.role == "operator" and dana.api_key_hash == hash_api_key(first_key)

    row.get_by_role("button", name="Rotate key").click()
    _confirm(page)
    expect(shown).not_to_have_text(first_key)
    with session_scope(live.app.state.db) as session:
        assert users.get_user_by_handle(session, handle="dana").api_key_hash \
            == hash_api_key(shown.inner_text())

    row.get_by_role("button", name="Revoke key").click()
    _confirm(page)
    expect(row.locator("td").nth(1)).to_have_text(re.compile(r"^revoked "))
    expect(row.get_by_role("button", name="Revoke key")).to_have_count(0)

    row.get_by_role("button", name="Erase").click()
    _confirm(page)
    expect(row).to_have_count(0)
    with session_scope(live.app.state.db) as session:
        assert users.get_user_by_handle(session, handle="dana") is None
    assert page.errors == []
