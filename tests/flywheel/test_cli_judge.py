"""`flywheel judge`: a function judge voting at a live server, a candidate's samples
judged, and user errors as one `error:` line."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.queries import conversations
from feedback.queries.adapters import get_adapter, register_adapter, set_eval_report
from flywheel.cli import app
from flywheel.settings import Settings
from server.app import create_app
from tests.server.support import LiveServer, add_user, load_demo, make_settings

runner = CliRunner()
GOOD = "flywheel.judge.functions:kindness_80"


@pytest.fixture(autouse=True)
def _no_flywheel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"FLYWHEEL_{name.upper()}", raising=False)


@pytest.fixture(scope="module")
def live(models_dir: Path, tmp_path_factory) -> Iterator[LiveServer]:
    app = create_app(make_settings(tmp_path_factory.mktemp("cli-judge")),
                     model=load_demo(models_dir))
    with LiveServer(app) as server:
        yield server


def judge_cli(*args: str, env: dict | None = None):
    return runner.invoke(app, ["judge", *args], env=env, prog_name="flywheel")


def test_a_judge_votes_at_a_server_and_reports(live):
    db = live.app.state.db
    person, _ = add_user(db)
    with session_scope(db) as s:
        for i in range(4):
            chat = conversations.create_conversation(s, user_id=person)
            ask = conversations.add_message(s, conversation_id=chat.id, role="user",
                                            content=f"Tell me about thing {i}.")
            for text in ("it is kind.", "it is rude.")[:1 + i % 2]:
                conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                          content=text, parent_id=ask.id)
    _, key = add_user(db, role="judge", handle="cli-judge")
    url = str(db.url)
    result = judge_cli("--judge", GOOD, "--server", live.url, "--db", url,
                       env={"FLYWHEEL_JUDGE_KEY": key})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["handle"] == "cli-judge" and report["judge"] == GOOD
    assert report["votes"] == {"thumb": 2, "pick": 2} and report["parse_failures"] == 0
    assert report["calls"] == 2 * 2 + 2 and report["pairs"] == 2
    assert report["agreement_with_people"]["weight"] == 1.0  # no evidence yet
    again = judge_cli("--judge", GOOD, "--server", live.url, "--db", url,
                      env={"FLYWHEEL_JUDGE_KEY": key})
    assert json.loads(again.output.strip().splitlines()[-1])["calls"] == 0  # nothing new


def test_a_candidates_samples_are_judged(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = open_store(url)
    with session_scope(engine) as s:
        register_adapter(s, version="policy-v1", base_model="demo", path="/x",
                         sha256="0" * 64, status="candidate")
        set_eval_report(s, version="policy-v1", report={"samples": [
            {"prompt": "q", "candidate": "it is kind.", "baseline": "it is rude."}]})
    result = judge_cli("--judge", "flywheel.judge.functions:always_a", "--candidate",
                       "policy-v1", "--db", url)
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["candidate"] == "policy-v1" and line["position_flip_rate"] == 1.0
    with session_scope(engine) as s:
        assert get_adapter(s, version="policy-v1").eval_report["judge_win_rate"]["ties"] == 1


@pytest.mark.parametrize(("args", "message"), [
    ((), "no judge"),
    (("--judge", GOOD, "--judge-model", "x"), "not both"),
    (("--judge", "nonsense"), "module:function"),
    (("--judge", GOOD), "FLYWHEEL_JUDGE_KEY"),
    (("--judge-model", "x", "--judge-url", "http://127.0.0.1:9/v1", "--rubric", "/no/such"),
     "cannot read the rubric"),
])
def test_user_errors_are_one_line(tmp_path, args, message):
    result = judge_cli(*args, "--data-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
