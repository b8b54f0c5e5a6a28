"""Importing data files and logs into the store, on SQLite and PostgreSQL."""

import gzip
import json
from pathlib import Path

import pytest

from feedback.formats import parse_record
from feedback.importer import ImportFailed, import_file
from feedback.queries.conversations import conversation_messages, iter_conversations
from feedback.queries.users import get_user_by_handle, iter_users
from feedback.queries.votes import iter_comparisons, iter_flags, iter_ratings

HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Help me?\n\nAssistant: Sure.",
      "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Help me?\n\nAssistant: No."}
TRL = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
CHAT = {"prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}]}
UP = {"prompt": "Tell a joke", "completion": "A pun.", "label": True}
DOWN = {"prompt": [{"role": "user", "content": "Tell a joke"}],
        "completion": [{"role": "assistant", "content": "No."}], "label": False}


def write(path: Path, lines: list) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_bytes(gzip.compress(text.encode()) if path.suffix == ".gz" else text.encode())
    return path


def assert_empty(session) -> None:
    assert list(iter_users(session)) == [] and list(iter_conversations(session)) == []


def test_preferences_become_threads_with_a_decided_comparison(engine, session, tmp_path):
    report = import_file(engine, write(tmp_path / "p.jsonl", [HH, TRL, CHAT]))
    assert (report.lines, report.pairs, report.labels, report.skipped_duplicates) == (3, 3, 0, 0)
    owner = get_user_by_handle(session, handle="import")
    conversations = list(iter_conversations(session))
    assert [c.external_id for c in conversations] == [parse_record(r).key for r in (HH, TRL, CHAT)]
    assert all(c.source == "import" and c.user_id == owner.id for c in conversations)
    assert conversations[0].title == "Hi"
    comparisons = list(iter_comparisons(session))
    for conversation, comparison, line in zip(conversations, comparisons, (HH, TRL, CHAT),
                                              strict=True):
        record = parse_record(line)
        messages = {m.id: m for m in conversation_messages(session,
                                                           conversation_id=conversation.id)}
        assert comparison.choice == "a" and comparison.user_id == owner.id
        chosen, rejected = (messages[i] for i in comparison.candidate_ids)
        assert (chosen.content, rejected.content) == (record.chosen, record.rejected)
        assert chosen.role == rejected.role == "assistant"
        assert chosen.parent_id == rejected.parent_id == comparison.prompt_message_id
        thread, node = [], messages[comparison.prompt_message_id]
        while node is not None:
            thread.append((node.role, node.content))
            node = messages.get(node.parent_id)
        assert tuple(thread[::-1]) == record.prompt


def test_unpaired_records_become_thumbs(engine, session, tmp_path):
    report = import_file(engine, write(tmp_path / "u.jsonl", [UP, DOWN]))
    assert (report.pairs, report.labels) == (0, 2)
    ratings = list(iter_ratings(session))
    assert [r.thumb for r in ratings] == [1, -1]
    messages = [m for c in iter_conversations(session)
                for m in conversation_messages(session, conversation_id=c.id)]
    assert [(m.role, m.content) for m in messages] == [
        ("user", "Tell a joke"), ("assistant", "A pun."), ("user", "Tell a joke"),
        ("assistant", "No.")]
    assert [r.message_id for r in ratings] == [messages[1].id, messages[3].id]


def test_importing_again_adds_nothing(engine, session, tmp_path):
    plain = write(tmp_path / "data.jsonl", [HH, UP, HH])
    first = import_file(engine, plain, user_handle="alice")
    assert (first.pairs, first.labels, first.skipped_duplicates) == (1, 1, 1)
    again = import_file(engine, write(tmp_path / "data.jsonl.gz", [UP, HH]))  # gzipped twin
    assert (again.pairs, again.labels, again.skipped_duplicates) == (0, 0, 2)
    assert len(list(iter_conversations(session))) == 2
    assert [u.handle for u in iter_users(session)] == ["alice"]  # nobody new was made


@pytest.mark.parametrize(("bad", "reason"), [
    ("{oops", "line is not JSON"),
    ({"prompt": "q", "chosen": "x"}, "missing field 'rejected'"),
    ({"prompt": "q", "chosen": "x", "rejected": "x"}, "chosen and rejected are identical"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "chosen": "x", "rejected": "y"}, "prompt must end with a user turn"),
    ({"prompt": [{"role": "tool", "content": "q"}], "chosen": "x", "rejected": "y"},
     "unknown role 'tool'"),
    ({"prompt": "q", "completion": "", "label": "yes"}, "'label' must be true or false"),
])
def test_a_bad_line_aborts_the_whole_import(engine, session, tmp_path, bad, reason):
    path = write(tmp_path / "bad.jsonl", [HH, UP, bad, TRL])
    with pytest.raises(ImportFailed) as caught:
        import_file(engine, path)
    assert str(caught.value).startswith(f"{path}:3: {reason}")
    assert_empty(session)


def test_nothing_half_imported_is_kept(engine, session, tmp_path):
    many = [{"prompt": f"question {i}", "chosen": "x", "rejected": "y"} for i in range(1200)]
    path = write(tmp_path / "many.jsonl.gz", [*many, {"prompt": "q"}])
    with pytest.raises(ImportFailed, match=r"many\.jsonl\.gz:1201: a prompt alone is no feedback"):
        import_file(engine, path)  # after two batches were already written
    assert_empty(session)


def test_skip_invalid_counts_bad_lines(engine, session, tmp_path):
    path = write(tmp_path / "mixed.jsonl", [HH, "{oops", {"x": 1}, "", UP, "[1]"])
    report = import_file(engine, path, skip_invalid=True)
    assert (report.lines, report.pairs, report.labels, report.skipped_invalid) == (5, 1, 1, 3)
    assert report.invalid_examples == [
        f"{path}:2: line is not JSON (Expecting property name enclosed in double quotes "
        "at column 2)",
        f"{path}:3: not a known record: expected prompt/chosen/rejected, "
        "prompt/completion/label, or chosen/rejected fields",
        f"{path}:6: line is not a JSON object"]
    assert "skipped 0 duplicates and 3 invalid lines" in report.summary()


def test_unreadable_files_fail_clearly(engine, session, tmp_path):
    with pytest.raises(ImportFailed, match=r"nope\.jsonl: cannot read: No such file"):
        import_file(engine, tmp_path / "nope.jsonl")
    with pytest.raises(ImportFailed, match="cannot read: Is a directory"):
        import_file(engine, tmp_path)
    assert_empty(session)


def test_progress_is_reported(engine, tmp_path):
    path = write(tmp_path / "p.jsonl", [HH, TRL])
    seen = []
    import_file(engine, path, on_progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)


# -- logs --------------------------------------------------------------------------------------

T0 = "2026-01-02T03:04:05.000006Z"
HEADER = {"format": "flywheel-log", "version": 1, "exported_at": T0}
LOG = [
    HEADER,
    {"type": "user", "id": 7, "handle": "alice", "role": "operator", "created_at": T0},
    {"type": "conversation", "id": 3, "user_id": 7, "title": "t", "source": "chat",
     "external_id": None, "created_at": T0, "updated_at": T0},
    {"type": "message", "id": 10, "conversation_id": 3, "parent_id": None, "role": "user",
     "content": "q", "created_at": T0},
    {"type": "message", "id": 12, "conversation_id": 3, "parent_id": 10, "role": "assistant",
     "content": "a", "created_at": T0, "adapter_version": "policy-v2", "seed": 5,
     "sampling": {"temperature": 0.7}, "latency_ms": 12.5},
    {"type": "rating", "id": 1, "message_id": 12, "user_id": 7, "thumb": -1,
     "reasons": ["rude"], "comment": "meh", "created_at": T0, "updated_at": T0},
    {"type": "flag", "id": 4, "message_id": 12, "user_id": 7, "category": "harmful",
     "comment": "", "created_at": T0},
]


def test_a_log_is_restored_with_new_ids_and_again_adds_nothing(engine, session, tmp_path):
    path = write(tmp_path / "log.jsonl", LOG)
    report = import_file(engine, path)
    assert report.log and report.restored == {"user": 1, "conversation": 1, "message": 2,
                                              "rating": 1, "flag": 1}
    alice = get_user_by_handle(session, handle="alice")
    assert alice.role == "operator" and alice.api_key_hash is None
    (conversation,) = iter_conversations(session)
    question, answer = conversation_messages(session, conversation_id=conversation.id)
    assert answer.parent_id == question.id and answer.sampling == {"temperature": 0.7}
    assert (answer.adapter_version, answer.seed, answer.latency_ms) == ("policy-v2", 5, 12.5)
    assert answer.created_at.isoformat().startswith("2026-01-02T03:04:05.000006")
    (rating,) = iter_ratings(session)
    assert (rating.message_id, rating.user_id, rating.thumb, rating.reasons) == (
        answer.id, alice.id, -1, ["rude"])
    assert [f.category for f in iter_flags(session)] == ["harmful"]
    again = import_file(engine, path)
    assert again.restored == {} and again.skipped_duplicates == 5
    assert "restored nothing new" in again.summary()
    assert len(list(iter_conversations(session))) == 1


@pytest.mark.parametrize(("line", "reason"), [
    ({"type": "vote", "id": 1}, "not a log record: 'type' must be one of user, conversation"),
    ({"type": "message", "id": 11, "conversation_id": 99, "parent_id": None, "role": "user",
      "content": "q"}, "refers to conversation 99, which is not earlier in the log"),
    ({"type": "message", "id": 11, "conversation_id": 3, "role": "wizard", "content": "q"},
     "message record has an invalid role: 'wizard'"),
    ({"type": "message", "id": 11, "conversation_id": 3, "role": "user"},
     "message record is missing field 'content'"),
    ({"type": "rating", "id": 9, "message_id": 12, "user_id": 7, "thumb": 2},
     "rating record has an invalid thumb: 2"),
    ({"type": "message", "id": 99, "deleted": True, "deleted_at": T0},
     "deletes message 99, which is not earlier in the log"),
    ({"type": "message", "id": 11, "conversation_id": 3, "role": "user", "content": "q",
      "created_at": "yesterday"}, "'created_at' must be an ISO-8601 time"),
])
def test_a_bad_log_line_aborts_the_restore(engine, session, tmp_path, line, reason):
    path = write(tmp_path / "log.jsonl", [*LOG, line])
    with pytest.raises(ImportFailed) as caught:
        import_file(engine, path)
    assert str(caught.value).startswith(f"{path}:{len(LOG) + 1}: {reason}")
    assert_empty(session)


def test_later_states_and_deletions_are_merged_and_the_registry_left_out(engine, session,
                                                                          tmp_path):
    T1 = "2026-01-03T00:00:00.000000Z"
    path = write(tmp_path / "events.jsonl", [
        {**HEADER, "version": 2, "source": "events"}, *LOG[1:],
        {**LOG[5], "thumb": 1, "reasons": [], "updated_at": T1},  # the rating, changed
        {"type": "flag", "id": 4, "deleted": True, "deleted_at": T1},
        {"type": "adapter", "id": 1, "version": "policy-v1", "base_model": "demo",
         "path": "/a", "status": "candidate", "created_at": T0, "updated_at": T0},
        {"type": "annotator_quality", "user_id": 7, "reward_model": "rm-0001",
         "reward_model_items": 3, "computed_at": T1},
        {"type": "reward_model", "id": 1, "version": "rm-0001", "path": "/rm", "backbone":
         "minilm", "status": "current", "created_at": T0, "updated_at": T0}])
    report = import_file(engine, path)
    assert report.restored == {"user": 1, "conversation": 1, "message": 2, "rating": 1,
                               "flag": 1}
    assert report.not_imported == 3 and "not imported: 3 records" in report.summary()
    (rating,) = iter_ratings(session)
    assert rating.thumb == 1 and rating.updated_at.isoformat().startswith("2026-01-03")
    assert list(iter_flags(session)) == []


def test_an_unknown_log_version_is_refused(engine, session, tmp_path):
    path = write(tmp_path / "log.jsonl", [{**HEADER, "version": 9}, *LOG[1:]])
    with pytest.raises(ImportFailed, match=r"log\.jsonl:1: unsupported flywheel-log version 9"):
        import_file(engine, path, skip_invalid=True)
    assert_empty(session)
