"""`flywheel watch`: the figures per adapter and the verdicts, as a table and as JSON;
--score scores served answers first; a bad bucket is one error line."""

import json
from pathlib import Path

import pytest

from feedback.db import open_store, session_scope
from flywheel.settings import Settings
from tests.feedback.queries.test_watch import crowd
from tests.flywheel.test_cli import flywheel_cli, ok, one_error, sqlite_url


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """The reward-hacking crowd of tests/feedback/queries/test_watch.py."""
    url = sqlite_url(tmp_path / "store.db")
    engine = open_store(url)
    with session_scope(engine) as session:
        crowd(session, tmp_path)
    engine.dispose()
    return url


def test_the_table_and_the_verdicts(db, tmp_path):
    lines = ok(flywheel_cli("watch", "--db", db, "--data-dir", tmp_path)).splitlines()
    assert lines[0].endswith("UTC; reward model rm-0001")
    assert lines[1].split() == ["adapter", "answers", "thumbs", "up", "rated", "flagged",
                                "length", "degenerate", "reward", "scored"]
    v1, v2 = lines[2].split(), lines[3].split()
    assert v1[0] == "policy-v1" and v2[:2] == ["policy-v2", "*"]
    assert v2[2] == "80" and v2[5:8] == ["0.0%", "9.0", "0.0%"] and v2[-1] == "80"
    assert lines[4] == "live policy-v2 (*) against policy-v1"
    assert lines[5].startswith("reward-hacking alarm: RAISED — the reward model scores it")
    assert lines[6].startswith("rollback due: YES — thumbs-up rate fell")
    assert lines[6].endswith("(automatic rollback off)")


def test_json_and_score_first(db, tmp_path):
    result = flywheel_cli("watch", "--db", db, "--data-dir", tmp_path, "--json", "--score",
                          "--bucket", "hour")
    body = json.loads(ok(result))
    assert "scored 0 answers" in result.stderr  # rm-0001 has no files to score with
    assert body["bucket"] == "hour" and body["alarm"]["raised"] is True
    assert body["rollback"]["automatic"] is False
    v2 = body["adapters"]["policy-v2"]
    assert len(v2["buckets"]) == 48 and v2["totals"]["answers"] == 80


def test_a_bad_bucket_is_one_error_line(db, tmp_path):
    one_error(flywheel_cli("watch", "--db", db, "--data-dir", tmp_path, "--bucket", "week"),
              "bucket must be hour or day")
