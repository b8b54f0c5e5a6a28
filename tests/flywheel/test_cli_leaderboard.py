"""`flywheel leaderboard`: the table, its JSON lines, an empty store, and bad options."""

import json
from pathlib import Path

import pytest

from feedback.db import open_store, session_scope
from feedback.queries import conversations as convs
from feedback.queries import users, votes
from flywheel.settings import Settings
from tests.flywheel.test_cli import flywheel_cli, ok, sqlite_url, usage_error


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """policy-v1 beat the base in 3 battles of 4 (one tie)."""
    url = sqlite_url(tmp_path / "store.db")
    engine = open_store(url)
    with session_scope(engine) as session:
        judge = users.create_user(session, handle="judge")
        for choice in ("a", "a", "b", "tie"):
            conversation = convs.create_conversation(session, user_id=judge.id)
            prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                       content="hi")
            ids = [convs.add_message(session, conversation_id=conversation.id,
                                     role="assistant", content="x", parent_id=prompt.id,
                                     adapter_version=v).id for v in ("policy-v1", None)]
            comparison = votes.create_comparison(session, user_id=judge.id,
                                                 prompt_message_id=prompt.id, candidate_ids=ids)
            votes.record_choice(session, comparison_id=comparison.id, user_id=judge.id,
                                choice=choice)
    engine.dispose()
    return url


def test_the_table_ranks_versions_best_first(db):
    lines = ok(flywheel_cli("leaderboard", "--db", db, "--resamples", 200)).splitlines()
    assert lines[0].split() == ["rank", "version", "rating", "95%", "interval", "battles",
                                "won", "lost", "tied", "status"]
    first, second = lines[1].split(), lines[2].split()
    assert (first[:2], first[-4:]) == (["1", "policy-v1"], ["2", "1", "1", "-"])
    assert second[:3] == ["2", "base", "1000"] and second[3:6] == ["1000", "to", "1000"]
    assert lines[-1] == ("4 battles; base fixed at 1000; intervals from 200 bootstrap "
                         "resamples of the battles")


def test_json_lines_and_an_empty_store(db, tmp_path):
    rows = [json.loads(line) for line in ok(flywheel_cli(
        "leaderboard", "--db", db, "--json", "--resamples", 100, "--level", 0.9)).splitlines()]
    assert [r["version"] for r in rows] == ["policy-v1", "base"]
    assert rows[0]["low"] < rows[0]["rating"] < rows[0]["high"]
    assert (rows[0]["wins"], rows[0]["losses"], rows[0]["ties"], rows[0]["battles"]) == (
        2, 1, 1, 4)
    empty = sqlite_url(tmp_path / "empty.db")
    assert ok(flywheel_cli("leaderboard", "--db", empty)) == (
        "no side-by-side battles decided yet\n")


def test_an_impossible_level_is_a_usage_error(db):
    usage_error(flywheel_cli("leaderboard", "--db", db, "--level", 1.5), "--level")
