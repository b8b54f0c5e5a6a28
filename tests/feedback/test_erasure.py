"""Erasing a user: nothing they typed survives anywhere in the data directory (database
file, WAL, event log, later exports), the others' data stays, the rewritten log still
replays and imports, and the registry marks what was trained on the erased data."""

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from feedback import erasure as erasure_module
from feedback.db import open_store, session_scope
from feedback.erasure import erase_user
from feedback.erasure_log import ERASED, blank_eval_report
from feedback.errors import NotFound
from feedback.eventlog import EventLog
from feedback.exporter import export_feedback
from feedback.importer import import_file
from feedback.models import Adapter, AuditEvent, Erasure, Message, RewardModelVersion, User
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import reward_models as rm_registry
from feedback.queries import runs, users, votes
from feedback.replay import replay_log

SHA = "0" * 64


def _files_holding(data_dir: Path, secret: str) -> list[str]:
    """Every file under `data_dir` whose raw bytes hold `secret`."""
    needle = secret.encode()
    return [str(p) for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _chat(session, user_id: int, prompt: str, answer: str = "an answer"):
    conversation = convs.create_conversation(session, user_id=user_id, title=prompt[:40])
    asked = convs.add_message(session, conversation_id=conversation.id, role="user",
                              content=prompt)
    said = convs.add_message(session, conversation_id=conversation.id, role="assistant",
                             content=answer, parent_id=asked.id)
    return conversation, asked, said


def _report(prompt: str) -> dict:
    samples = [{"prompt": prompt, "candidate": "kind words", "baseline": "odd words",
                "candidate_reward": 1.0, "baseline_reward": 0.5},
               {"prompt": "Tell me about my cat.", "candidate": "it is kind",
                "baseline": "it is odd", "candidate_reward": 0.2, "baseline_reward": 0.1}]
    markdown = "\n".join(f"**Prompt:** {s['prompt']}\n\n- candidate (+1.00): {s['candidate']}"
                         f"\n- baseline (+0.50): {s['baseline']}" for s in samples)
    return {"samples": samples, "markdown": markdown, "kl_to_base": 0.1}


@pytest.fixture
def populated(db_url, tmp_path):
    """A store with an event log: alice (to be erased) and bob, who voted on her answer and
    she on his; a reward model and an adapter from before alice came, and ones after."""
    data_dir = tmp_path / "data"
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{data_dir / 'flywheel.db'}"
    log = data_dir / "events.jsonl"
    engine = open_store(db_url, event_log=log)
    secret = f"zebra-quartz-{uuid.uuid4().hex}"
    with session_scope(engine) as session:
        bob = users.create_user(session, handle="bob", role="operator").id
        rm_registry.register_reward_model(session, version="rm-0001", path="/rm/1",
                                          backbone="minilm", actor="scheduler",
                                          data_window={"until": "2020-01-01T00:00:00+00:00"})
        registry.register_adapter(session, version="policy-v1", base_model="demo", path="/a1",
                                  sha256=SHA, status="candidate",
                                  reward_model_version="rm-0001")
        _, _, bob_answer = _chat(session, bob, "What is a cat?")
        alice = users.create_user(session, handle="alice", api_key_hash="h" * 64).id
        # A conversation alice deleted herself: gone from the store, not from the log.
        gone, _, _ = _chat(session, alice, f"deleted {secret} earlier")
    with session_scope(engine) as session:
        convs.delete_conversation(session, conversation_id=gone.id, user_id=alice)
        _, asked, answer = _chat(session, alice, f"my secret is {secret}")
        votes.upsert_rating(session, message_id=answer.id, user_id=alice, thumb=-1,
                            comment=f"comment {secret}")
        votes.upsert_rating(session, message_id=answer.id, user_id=bob, thumb=1)
        votes.upsert_rating(session, message_id=bob_answer.id, user_id=alice, thumb=1,
                            comment=f"on bob {secret}")
        votes.add_rewrite(session, message_id=answer.id, user_id=alice,
                          content=f"rewrite {secret}")
        votes.add_flag(session, message_id=bob_answer.id, user_id=alice, category="other",
                       comment=f"flag {secret}")
        registry.record_audit_event(session, actor="alice", actor_id=alice, action="note")
        run = runs.start_run(session, kind="cycle", config={}, data_window={
            "until": (asked.created_at + timedelta(seconds=1)).isoformat()})
        rm_registry.register_reward_model(session, version="rm-0002", path="/rm/2",
                                          backbone="minilm", actor="scheduler",
                                          parent_version="rm-0001")
        registry.register_adapter(session, version="policy-v2", base_model="demo", path="/a2",
                                  sha256=SHA, status="candidate", parent_version="policy-v1",
                                  reward_model_version="rm-0002")
        registry.set_eval_report(session, version="policy-v2", report=_report(
            f"deleted {secret} earlier"))
        registry.set_eval_report(session, version="policy-v1", report=_report(
            f"my secret is {secret}"))
        runs.finish_run(session, run_id=run.id, metrics={}, adapter_version="policy-v2")
    yield engine, data_dir, log, secret, alice, bob
    engine.dispose()


def test_erasure_leaves_no_trace_in_the_data_directory(populated):
    engine, data_dir, log, secret, alice, bob = populated
    assert _files_holding(data_dir, secret)  # the test can see it before

    report = erase_user(engine, user_id=alice, actor="root", event_log=log)
    export_feedback(engine, fmt="log", out=data_dir / "after.jsonl")
    export_feedback(engine, fmt="kto", out=data_dir / "after-kto.jsonl")

    assert _files_holding(data_dir, secret) == []
    with session_scope(engine) as session:
        assert session.get(User, alice) is None
        assert session.scalar(select(func.count()).select_from(Message).where(
            Message.content.contains(secret))) == 0
        adapters = {a.version: a for a in session.scalars(select(Adapter))}
        assert secret not in json.dumps([a.eval_report for a in adapters.values()])
        assert adapters["policy-v1"].eval_report["samples"][0]["prompt"] == ERASED
        assert adapters["policy-v1"].eval_report["samples"][1]["prompt"] \
            == "Tell me about my cat."
        # bob's conversation and vote on his own answer stay; his vote on hers went
        assert session.get(User, bob).handle == "bob"
        assert [m.content for m in session.scalars(select(Message))] \
            == ["What is a cat?", "an answer"]
        erasure = session.scalars(select(Erasure)).one()
        assert erasure.actor == "root" and erasure.rows["rating"] == 3
        note = session.scalars(select(AuditEvent).where(AuditEvent.action == "note")).one()
        assert (note.actor, note.actor_id) == ("alice", None)
    assert report.rows["conversation"] == 1 and report.rows["message"] == 2
    assert "erasure" in report.summary()


def test_the_rewritten_event_log_holds_one_erasure_record_and_replays(populated, tmp_path):
    engine, data_dir, log, secret, alice, bob = populated
    report = erase_user(engine, user_id=alice, actor="self", event_log=log)

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    assert header["format"] == "flywheel-log"
    erasures = [r for r in records if r["type"] == "erasure"]
    assert len(erasures) == 1 and set(erasures[0]) == {"type", "id", "actor", "rows",
                                                       "erased_at"}
    assert (erasures[0]["id"], erasures[0]["actor"]) == (report.erasure_id, "self")
    assert not [r for r in records if r["type"] == "user" and r["id"] == alice]
    assert not [r for r in records if r.get("user_id") == alice]
    assert report.log_records_removed > 10

    replayed = open_store(f"sqlite:///{tmp_path / 'replayed.db'}")
    replay_log(replayed, log)
    with session_scope(replayed) as session:
        assert [u.handle for u in session.scalars(select(User))] == ["bob"]
        assert session.scalar(select(func.count()).select_from(Erasure)) == 1
        marked = session.scalars(select(Adapter).where(Adapter.trained_on_erased_data)).all()
        assert [a.version for a in marked] == ["policy-v2"]
    merged = open_store(f"sqlite:///{tmp_path / 'merged.db'}")
    imported = import_file(merged, log)
    assert imported.restored["user"] == 1 and imported.not_imported > 0
    replayed.dispose()
    merged.dispose()


def test_what_trained_on_the_erased_data_is_marked_and_audited(populated):
    engine, _, log, _, alice, _ = populated
    report = erase_user(engine, user_id=alice, actor="root", event_log=None)

    assert report.reward_models == ["rm-0002"] and report.adapters == ["policy-v2"]
    with session_scope(engine) as session:
        assert {r.version: r.trained_on_erased_data
                for r in session.scalars(select(RewardModelVersion))} \
            == {"rm-0001": False, "rm-0002": True}
        events = rm_registry.reward_model_audit_events(session, version="rm-0002")
        assert events[0].action == "trained_on_erased_data"
        assert events[0].detail == {"erasure": report.erasure_id}
        trail = registry.list_audit_events(session, adapter_version="policy-v2")
        assert trail[0].action == "trained_on_erased_data"
    assert "policy-v2" in report.summary() and report.log_records_removed is None


def test_erasing_nobody_is_not_found(engine):
    with pytest.raises(NotFound):
        erase_user(engine, user_id=999, actor="root", event_log=None)


def test_sqlite_keeps_no_deleted_bytes_in_free_pages_or_the_wal(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    secret = f"free-page-{uuid.uuid4().hex}"
    with session_scope(engine) as session:
        user = users.create_user(session, handle="carol").id
        for _ in range(50):  # enough pages for some to be freed
            _chat(session, user, f"{secret} " + "x" * 500)
    erase_user(engine, user_id=user, actor="root", event_log=None)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA freelist_count")).scalar() == 0
    assert _files_holding(tmp_path, secret) == []
    engine.dispose()


def test_an_eval_report_without_the_prompts_is_left_as_it_is():
    report = _report("something else")
    assert blank_eval_report(report, {"not in it"}) is report
    blanked = blank_eval_report(report, {"something else"})
    assert "something else" not in json.dumps(blanked)
    assert blanked["markdown"].splitlines()[0] == f"**Prompt:** {ERASED}"
    assert blanked["markdown"].splitlines()[2] == f"- candidate (+1.00): {ERASED}"
    assert blanked["samples"][0]["candidate_reward"] == 1.0


def test_lines_of_the_user_appended_after_the_rewrite_are_erased_too(populated, monkeypatch):
    engine, data_dir, log, secret, alice, _ = populated
    compact = erasure_module.compact

    def late_append(engine):  # a transaction of alice's that committed just before
        late = {"type": "conversation", "id": 10_000, "user_id": alice, "title": secret}
        EventLog(log).append([late])
        compact(engine)

    monkeypatch.setattr(erasure_module, "compact", late_append)
    erase_user(engine, user_id=alice, actor="root", event_log=log)

    assert secret.encode() not in log.read_bytes()
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert [r["type"] for r in records].count("erasure") == 1
