"""Rebuilding a store from a flywheel log (event log or export), ids and all, on SQLite and
PostgreSQL; `flywheel feedback replay`."""

import gzip
import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.exporter import export_feedback
from feedback.queries import adapters as registry
from feedback.queries import reward_models, runs
from feedback.queries.annotators import save_reward_model_agreement
from feedback.queries.conversations import add_message, create_conversation, delete_conversation
from feedback.queries.users import create_user, get_user_by_handle
from feedback.queries.votes import create_comparison, record_choice, upsert_rating
from feedback.replay import ReplayFailed, replay_log
from flywheel.cli import app

SHA = "0" * 64
runner = CliRunner()


def build_history(engine) -> dict:
    """A store's life: chats, a changed vote, a comparison decided later, a deleted
    conversation, reward models (one rejected, one made current again), adapters promoted
    and rolled back, a run, annotator quality twice."""
    with session_scope(engine) as s:
        alice = create_user(s, handle="alice", api_key_hash="a" * 64)
        bob = create_user(s, handle="bob", role="operator")
        ids = {"alice": alice.id, "bob": bob.id}
    for n in range(3):
        with session_scope(engine) as s:
            c = create_conversation(s, user_id=ids["alice"], title=f"chat {n}")
            q = add_message(s, conversation_id=c.id, role="user", content=f"question {n}")
            a = add_message(s, conversation_id=c.id, role="assistant", content=f"a{n}",
                            parent_id=q.id, adapter_version="policy-v1", seed=n,
                            sampling={"temperature": 0.7})
            b = add_message(s, conversation_id=c.id, role="assistant", content=f"b{n}",
                            parent_id=q.id)
            comparison = create_comparison(s, user_id=ids["alice"], prompt_message_id=q.id,
                                           candidate_ids=[a.id, b.id])
            upsert_rating(s, message_id=a.id, user_id=ids["alice"], thumb=1)
            ids[f"conversation{n}"], ids[f"answer{n}"] = c.id, a.id
        with session_scope(engine) as s:
            record_choice(s, comparison_id=comparison.id, user_id=ids["alice"], choice="b")
    ids["first_window_end"] = datetime.now(UTC)
    with session_scope(engine) as s:
        upsert_rating(s, message_id=ids["answer0"], user_id=ids["alice"], thumb=-1,
                      reasons=["rude"])
        delete_conversation(s, conversation_id=ids["conversation1"], user_id=ids["alice"])
    with session_scope(engine) as s:
        for version, status in (("rm-0001", "current"), ("rm-0002", "current"),
                                ("rm-0003", "rejected")):
            reward_models.register_reward_model(
                s, version=version, path=f"/rm/{version}", backbone="minilm", status=status,
                actor="scheduler", heldout={"accuracy": 0.7, "loss": 0.6, "ece": 0.1,
                                            "pairs": 10}, data_window={"pairs": 90})
        reward_models.set_reward_model_status(s, version="rm-0001", status="current",
                                              actor="bob", actor_id=ids["bob"])
        for version in ("policy-v1", "policy-v2"):
            registry.register_adapter(s, version=version, base_model="demo", path=f"/{version}",
                                      sha256=SHA, status="candidate",
                                      reward_model_version="rm-0001")
            registry.set_adapter_status(s, version=version, status="approved", actor="bob",
                                        actor_id=ids["bob"])
            registry.promote(s, version=version, actor="bob", actor_id=ids["bob"])
        registry.rollback(s, actor="bob")
        run = runs.start_run(s, kind="cycle", config={"seed": 0}, data_window={"until": "x"})
    with session_scope(engine) as s:
        runs.finish_run(s, run_id=run.id, metrics={"reward": {"accuracy": 0.5}},
                        adapter_version="policy-v2")
    for agreement in (0.6, 0.8):
        with session_scope(engine) as s:
            save_reward_model_agreement(s, reward_model="rm-0001",
                                        agreement={ids["alice"]: (agreement, 12)})
    return ids


def records(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as lines:
        return [json.loads(line) for line in lines][1:]


def test_event_log_and_export_rebuild_identical_stores(db_url, tmp_path):
    events = tmp_path / "events.jsonl"
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}", event_log=events)
    ids = build_history(source)
    export_feedback(source, fmt="log", out=tmp_path / "source.log.gz")
    from_events = open_store(db_url)
    report = replay_log(from_events, events)
    assert report.updates > 0 and report.deletions > 0
    assert report.rows["conversation"] == 2 and report.rows["annotator_quality"] == 1
    export_feedback(from_events, fmt="log", out=tmp_path / "rebuilt.log")
    assert records(tmp_path / "rebuilt.log") == records(tmp_path / "source.log.gz")
    with session_scope(from_events) as s:  # the sequences moved past the replayed ids
        assert create_user(s, handle="carol").id == ids["bob"] + 1
        assert get_user_by_handle(s, handle="alice").api_key_hash is None
        assert registry.live_adapter(s).version == "policy-v1"
        assert registry.live_adapter(s).reward_model_version == "rm-0001"
        assert reward_models.current_reward_model(s).version == "rm-0001"
        assert [(r.version, r.status) for r in reward_models.list_reward_models(s)] == [
            ("rm-0003", "rejected"), ("rm-0002", "retired"), ("rm-0001", "current")]
        assert [e.action for e in reward_models.reward_model_audit_events(
            s, version="rm-0002")] == ["retired", "made_current", "registered"]
    from_events.dispose()
    source.dispose()


def test_an_export_rebuilds_the_same_store(engine, tmp_path):
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}")
    build_history(source)
    export_feedback(source, fmt="log", out=tmp_path / "a.log")
    replay_log(engine, tmp_path / "a.log")
    export_feedback(engine, fmt="log", out=tmp_path / "b.log")
    assert records(tmp_path / "b.log") == records(tmp_path / "a.log")


def test_until_rebuilds_the_store_as_it_was(engine, tmp_path):
    events = tmp_path / "events.jsonl"
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}", event_log=events)
    ids = build_history(source)
    report = replay_log(engine, events, until=ids["first_window_end"])
    assert report.after_until > 0
    assert report.rows["conversation"] == 3 and report.rows["adapter"] == 0
    assert report.rows["reward_model"] == 0
    export_feedback(engine, fmt="log", out=tmp_path / "then.log")
    ratings = [r for r in records(tmp_path / "then.log") if r["type"] == "rating"]
    assert [r["thumb"] for r in ratings] == [1, 1, 1]  # before alice changed her mind


def test_a_store_with_rows_is_refused(engine, tmp_path):
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}", event_log=tmp_path / "e.jsonl")
    build_history(source)
    replay_log(engine, tmp_path / "e.jsonl")
    result = runner.invoke(app, ["feedback", "replay", str(tmp_path / "e.jsonl"), "--db",
                                 str(engine.url.render_as_string(hide_password=False))])
    assert result.exit_code == 2
    assert "already holds user rows" in result.stderr and "feedback import" in result.stderr


HEADER = {"format": "flywheel-log", "version": 2, "source": "events",
          "created_at": "2026-01-02T03:04:05.000000Z"}
USER = {"type": "user", "id": 3, "handle": "alice", "role": "user",
        "created_at": "2026-01-02T03:04:05.000000Z"}


@pytest.mark.parametrize(("lines", "where", "reason"), [
    ([{**HEADER, "version": 3}, USER], 1, "unsupported flywheel-log version 3"),
    ([USER], 1, "not a flywheel log"),
    ([HEADER, USER, "{oops"], 3, "line is not JSON"),
    ([HEADER, USER, {"type": "vote", "id": 1}], 3, "not a log record"),
    ([HEADER, {**USER, "role": "wizard"}], 2, "user record has an invalid role"),
    ([HEADER, USER, {"type": "flag", "id": 9, "deleted": True,
                     "deleted_at": "2026-01-02T03:04:05Z"}], 3, "deletes flag 9"),
])
def test_a_bad_line_aborts_the_whole_replay(engine, tmp_path, lines, where, reason):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(ReplayFailed) as caught:
        replay_log(engine, path)
    assert str(caught.value).startswith(f"{path}:{where}: {reason}")
    with session_scope(engine) as s:
        assert get_user_by_handle(s, handle="alice") is None  # nothing kept


def test_a_dangling_reference_is_refused_by_the_store(engine, tmp_path):
    path = tmp_path / "dangling.jsonl"
    message = {"type": "message", "id": 1, "conversation_id": 99, "role": "user",
               "content": "q", "created_at": "2026-01-02T03:04:05Z"}
    path.write_text("".join(json.dumps(x) + "\n" for x in (HEADER, USER, message)))
    with pytest.raises(ReplayFailed, match="the store refused the replay"):
        replay_log(engine, path)


def test_the_command_replays_and_reports(tmp_path):
    source = open_store(f"sqlite:///{tmp_path / 'source.db'}", event_log=tmp_path / "e.jsonl")
    build_history(source)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = runner.invoke(app, ["feedback", "replay", str(tmp_path / "e.jsonl"), "--db",
                                 target])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("replayed ") and "conversation: 2" in result.stdout
