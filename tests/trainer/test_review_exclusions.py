"""What operators resolve in the review queue reaches the next cycle's training data (the
functions `trainer.cycle` reads it with), exports, and replays of the store's log."""

from types import SimpleNamespace

import pytest

from feedback.db import open_store, session_scope
from feedback.exporter import export_feedback
from feedback.models import utcnow
from feedback.queries import conversations, users, votes
from feedback.queries.review import resolve_review_item, sync_review_queue
from feedback.queries.review_listing import list_review_items
from feedback.replay import replay_log
from trainer.data import preference_pairs, user_prompts
from trainer.demonstrations import demonstrations
from trainer.replay import logged_answers


@pytest.fixture
def store(db_url, tmp_path):
    """Alice and Bob's votes on four prompts; the queue synced; every
    change in an event log."""
    engine = open_store(db_url, event_log=tmp_path / "events.jsonl")
    with session_scope(engine) as s:
        alice = users.create_user(s, handle="alice")
        bob = users.create_user(s, handle="bob")
        answers = {}
        for question, texts in (("Say hi", ("Hi!", "Go away.")), ("Count", ("1 2", "2 1")),
                                ("Help", ("Sure.", "No.")), ("Cats?", ("Cats purr.",))):
            chat = conversations.create_conversation(s, user_id=alice.id)
            prompt = conversations.add_message(s, conversation_id=chat.id, role="user",
                                               content=question)
            answers[question] = [conversations.add_message(
                s, conversation_id=chat.id, role="assistant", content=text,
                parent_id=prompt.id) for text in texts]
        hi, rude = answers["Say hi"]
        pick = votes.create_comparison(s, user_id=alice.id, prompt_message_id=hi.parent_id,
                                       candidate_ids=[hi.id, rude.id])
        votes.record_choice(s, comparison_id=pick.id, user_id=alice.id, choice="a")
        one, two = answers["Count"]
        bobs = votes.create_comparison(s, user_id=bob.id, prompt_message_id=one.parent_id,
                                       candidate_ids=[one.id, two.id])
        votes.record_choice(s, comparison_id=bobs.id, user_id=bob.id, choice="b")
        sure, no = answers["Help"]
        votes.upsert_rating(s, message_id=sure.id, user_id=alice.id, thumb=1)
        votes.upsert_rating(s, message_id=no.id, user_id=alice.id, thumb=-1, comment="rude")
        votes.add_rewrite(s, message_id=no.id, user_id=alice.id, content="Happy to help.")
        votes.add_flag(s, message_id=rude.id, user_id=alice.id, category="harmful")
        sync_review_queue(s)
        items = {i.kind: i.id for i in list_review_items(s).items}
    yield SimpleNamespace(engine=engine, alice=alice.id, bob=bob.id, items=items,
                          hi=hi.id, events=tmp_path / "events.jsonl")
    engine.dispose()


def _resolve(store, kind, action, **kw):
    with session_scope(store.engine) as s:
        resolve_review_item(s, item_id=store.items[kind], action=action, actor="ops", **kw)


def _training(engine, **kw):
    data = preference_pairs(engine, heldout_fraction=0.0, max_user_share=None,
                            annotator_weighting=False, **kw)
    return ({(p.source, p.chosen, p.rejected) for p in data.train},
            {(x.source, x.completion, x.label) for x in data.train_labels})


def _export(engine, fmt, path, **kw):
    export_feedback(engine, fmt=fmt, out=path, **kw)
    return path.read_text().splitlines()[1 if fmt == "log" else 0:]


def test_dismissing_a_flag_takes_back_its_bad_label(store):
    _, labels = _training(store.engine)
    assert ("flag", "Go away.", False) in labels
    _resolve(store, "flag", "dismiss")
    _, labels = _training(store.engine)
    assert ("flag", "Go away.", False) not in labels


def test_an_excluded_user_is_absent_from_training_and_exports(store, tmp_path):
    pairs, _ = _training(store.engine)
    assert ("choice", "2 1", "1 2") in pairs  # bob's pick
    with session_scope(store.engine) as s:  # bob's thumbs-down lands in the queue
        votes.upsert_rating(s, message_id=store.hi, user_id=store.bob, thumb=-1,
                            comment="meh")
        sync_review_queue(s)
        item = next(i for i in list_review_items(s, kind="thumbs_down").items
                    if i.user_id == store.bob)
        resolve_review_item(s, item_id=item.id, action="exclude", scope="user", actor="ops")
    pairs, labels = _training(store.engine)
    assert not any("1 2" in p or "2 1" in p for p in pairs)
    assert ("thumb", "Hi!", False) not in labels
    dpo = _export(store.engine, "dpo", tmp_path / "x.dpo.jsonl")
    assert len(dpo) == 1 and "Hi!" in dpo[0]  # alice's pick only
    log = _export(store.engine, "log", tmp_path / "x.log")
    assert not any('"type": "comparison"' in r and f'"user_id": {store.bob}' in r for r in log)
    assert not any('"type": "rating"' in r and f'"user_id": {store.bob}' in r for r in log)


def test_an_excluded_message_and_vote_leave_training_and_exports(store, tmp_path):
    _resolve(store, "thumbs_down", "exclude", scope="vote")
    _, labels = _training(store.engine)
    assert ("thumb", "No.", False) not in labels and ("thumb", "Sure.", True) in labels
    assert not any('"completion": [{"role": "assistant", "content": "No."}]' in r
                   for r in _export(store.engine, "kto", tmp_path / "k.jsonl"))
    _resolve(store, "flag", "exclude", scope="message")
    pairs, labels = _training(store.engine)
    assert not any("Go away." in p for p in pairs)  # alice's pick showed it
    assert not any("Go away." in x for x in labels)
    assert _export(store.engine, "dpo", tmp_path / "d.jsonl") == [
        r for r in _export(store.engine, "dpo", tmp_path / "d2.jsonl") if "Go away." not in r]
    assert not any("Go away." in r for r in _export(store.engine, "dpo", tmp_path / "d.jsonl"))


def test_a_redacted_answer_leaves_training_and_exports(store, tmp_path):
    _resolve(store, "flag", "redact")
    pairs, labels = _training(store.engine)
    assert not any("Go away." in p or "[redacted]" in p for p in pairs)
    assert not any("Go away." in x or "[redacted]" in x for x in labels)
    log = "\n".join(_export(store.engine, "log", tmp_path / "x.log"))
    assert "Go away." not in log and '"content": "[redacted]"' in log
    assert [{"role": "user", "content": "Say hi"}] in user_prompts(store.engine)  # the prompt


def test_rewrites_wait_for_approval_when_the_setting_asks(store, tmp_path):
    assert {d.completion for d in demonstrations(store.engine)} == {"Happy to help."}
    assert demonstrations(store.engine, approved_rewrites_only=True) == []
    pairs, _ = _training(store.engine, approved_rewrites_only=True)
    assert not any(p[0] == "rewrite" for p in pairs)
    assert _export(store.engine, "sft", tmp_path / "s.jsonl", approved_rewrites_only=True) == []
    _resolve(store, "rewrite", "accept")
    assert len(demonstrations(store.engine, approved_rewrites_only=True)) == 1
    pairs, _ = _training(store.engine, approved_rewrites_only=True)
    assert ("rewrite", "Happy to help.", "No.") in pairs


def test_a_dismissed_rewrite_never_trains(store, tmp_path):
    _resolve(store, "rewrite", "dismiss")
    assert demonstrations(store.engine) == []
    assert _export(store.engine, "sft", tmp_path / "s.jsonl") == []


def test_a_replay_of_the_event_log_leaves_out_what_was_excluded_after_its_window(
        store, tmp_path):
    window_end = utcnow()  # a past cycle's window: every vote, no exclusion yet
    _resolve(store, "flag", "exclude", scope="message")
    _resolve(store, "thumbs_down", "exclude", scope="user")
    rebuilt = open_store(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    replay_log(rebuilt, store.events, until=window_end)
    assert _training(rebuilt) == ({("choice", "2 1", "1 2")}, set())  # only bob's vote
    rebuilt.dispose()


def test_replaying_logged_answers_skips_redacted_ones(store, tmp_path):
    before = {a.content for a in logged_answers(store.events)}
    _resolve(store, "flag", "redact")
    after = {a.content for a in logged_answers(store.events)}
    assert "Go away." in before and after == before - {"Go away."}
