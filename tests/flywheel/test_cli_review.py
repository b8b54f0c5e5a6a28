"""`flywheel review list | resolve` on SQLite and PostgreSQL: the queue as lines and as
JSON, each resolution with its audit under --actor, and user errors as one line."""

import json

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.models import AuditEvent, Flag
from feedback.queries import conversations, users, votes
from flywheel.cli import app
from flywheel.settings import Settings

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture
def store(db_url, tmp_path):
    """Bob flags one of alice's answers; alice and carol thumb the other opposite ways."""
    engine = open_store(db_url)
    with session_scope(engine) as s:
        alice, bob, carol = (users.create_user(s, handle=h) for h in ("alice", "bob", "carol"))
        chat = conversations.create_conversation(s, user_id=alice.id)
        prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                           content="Hello?")
        good, bad = (conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                               content=text, parent_id=prompt.id)
                     for text in ("Hi there.", "Get lost."))
        votes.add_flag(s, message_id=bad.id, user_id=bob.id, category="harmful",
                       comment="rude")
        votes.upsert_rating(s, message_id=good.id, user_id=alice.id, thumb=1)
        votes.upsert_rating(s, message_id=good.id, user_id=carol.id, thumb=-1)
    yield engine
    engine.dispose()


def cli(db_url, tmp_path, *args):
    return runner.invoke(app, [*map(str, args), "--db", db_url, "--data-dir", str(tmp_path)],
                         prog_name="flywheel")


def test_list_then_resolve(store, db_url, tmp_path):
    listed = cli(db_url, tmp_path, "review", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert "flag" in lines[0] and "harmful: rude" in lines[0] and "Get lost." in lines[0]
    assert "disagreement" in lines[1] and "alice up" in lines[1] and "carol down" in lines[1]
    items = [json.loads(line) for line in
             cli(db_url, tmp_path, "review", "list", "--json").stdout.splitlines()]
    flag, disagreement = (item["id"] for item in items)

    done = cli(db_url, tmp_path, "review", "resolve", flag, "dismiss", "--actor", "ops-olga",
               "--note", "banter")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == f"review item {flag} (flag) is dismissed"
    excluded = cli(db_url, tmp_path, "review", "resolve", disagreement, "exclude", "--scope",
                   "user", "--user", "carol")
    assert excluded.exit_code == 0, excluded.output
    assert "is excluded (user)" in excluded.stdout
    assert cli(db_url, tmp_path, "review", "list").stdout.strip() == "nothing to review"
    every = cli(db_url, tmp_path, "review", "list", "--all").stdout
    assert "[dismissed by ops-olga]" in every and "[excluded user by cli:" in every
    with session_scope(store) as s:
        assert [f.status for f in s.exec(Flag.__table__.select()).all()] == ["dismissed"]
        audit = s.exec(AuditEvent.__table__.select()).all()
        assert [(a.actor, a.action) for a in audit][0] == ("ops-olga", "review_dismiss")


@pytest.mark.parametrize(("args", "fragment"), [
    (("resolve", 1, "approve"), "approve"),
    (("resolve", 1, "exclude"), "give a scope"),
    (("resolve", 2, "exclude", "--scope", "user", "--user", "nobody"), "no user 'nobody'"),
    (("resolve", 99, "accept"), "review item 99 not found"),
    (("list", "--status", "done"), "status must be one of"),
])
def test_user_errors_are_one_line(store, db_url, tmp_path, args, fragment):
    cli(db_url, tmp_path, "review", "list")  # fills the queue
    result = cli(db_url, tmp_path, "review", *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
