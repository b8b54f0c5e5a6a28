"""Training data from the store and from files: every kind of feedback, dedupe, the
per-user cap and the split by conversation."""

import json
from collections import Counter
from types import SimpleNamespace

import pytest

from feedback.db import session_scope
from feedback.queries import conversations, users, votes
from trainer.data import (
    Label,
    Pair,
    cap_user_share,
    pairs_from_file,
    preference_pairs,
    split,
    user_prompts,
)


def _answers(session, conversation, prompt_text, *texts, parent=None):
    prompt = conversations.add_message(session, conversation_id=conversation.id, role="user",
                                       content=prompt_text, parent_id=parent)
    return prompt, [conversations.add_message(session, conversation_id=conversation.id,
                                              role="assistant", content=text,
                                              parent_id=prompt.id) for text in texts]


@pytest.fixture
def store(engine):
    """One chat per kind of feedback, by alice (and bob's duplicate choice)."""
    with session_scope(engine) as s:
        alice = users.create_user(s, handle="alice")
        bob = users.create_user(s, handle="bob")
        chats = [conversations.create_conversation(s, user_id=alice.id) for _ in range(6)]
        p1, (a, b) = _answers(s, chats[0], "Say hi", "Hi!", "Go away.")
        for user in (alice, bob):  # the same verdict twice: one pair
            c = votes.create_comparison(s, user_id=user.id, prompt_message_id=p1.id,
                                        candidate_ids=[a.id, b.id])
            votes.record_choice(s, comparison_id=c.id, user_id=user.id, choice="a")
        p2, (c1, c2) = _answers(s, chats[1], "Pick one", "One.", "Two.")
        tie = votes.create_comparison(s, user_id=alice.id, prompt_message_id=p2.id,
                                      candidate_ids=[c1.id, c2.id])
        votes.record_choice(s, comparison_id=tie.id, user_id=alice.id, choice="tie")
        p3, (e, f) = _answers(s, chats[2], "Insult me", "You fool.", "Idiot.")
        bad = votes.create_comparison(s, user_id=alice.id, prompt_message_id=p3.id,
                                      candidate_ids=[e.id, f.id])
        votes.record_choice(s, comparison_id=bad.id, user_id=alice.id, choice="both_bad")
        votes.add_flag(s, message_id=e.id, user_id=bob.id, category="hateful")
        p4, (g, h, i) = _answers(s, chats[3], "Count", "1 2 3", "1 3 2", "3")
        ranked = votes.create_comparison(s, user_id=bob.id, prompt_message_id=p4.id,
                                         candidate_ids=[g.id, h.id, i.id])
        votes.record_choice(s, comparison_id=ranked.id, user_id=bob.id,
                            ranking=[g.id, h.id, i.id])
        p5, (j, k) = _answers(s, chats[4], "Help me", "Sure, here is how.", "No.")
        votes.upsert_rating(s, message_id=j.id, user_id=alice.id, thumb=1)
        votes.upsert_rating(s, message_id=k.id, user_id=alice.id, thumb=-1)
        votes.add_rewrite(s, message_id=k.id, user_id=bob.id, content="Of course! First, …")
        # a follow-up turn: its prompt is the whole thread
        _answers(s, chats[4], "Thanks", "You're welcome.", parent=j.id)
        _answers(s, chats[5], "Say hi", "Hello.")  # same prompt text as chat 0
    return SimpleNamespace(engine=engine, chats=chats)


def test_every_kind_of_feedback_becomes_pairs_or_labels(store):
    data = preference_pairs(store.engine, heldout_fraction=0.0, max_user_share=None)
    pairs = {(p.chosen, p.rejected): p for p in data.train}
    assert set(pairs) == {
        ("Hi!", "Go away."),  # choice (bob's duplicate dropped)
        ("1 2 3", "1 3 2"), ("1 2 3", "3"), ("1 3 2", "3"),  # ranking: 3·2/2 pairs
        ("Sure, here is how.", "No."),  # thumbs on siblings
        ("Of course! First, …", "No."),  # the rewrite beats the original
    }
    assert pairs[("Hi!", "Go away.")].prompt == [{"role": "user", "content": "Say hi"}]
    assert Counter(p.source for p in data.train) == {"choice": 1, "ranking": 3, "thumbs": 1,
                                                     "rewrite": 1}
    assert pairs[("Sure, here is how.", "No.")].weight < 1.0
    labels = Counter((x.completion, x.label, x.source) for x in data.train_labels)
    assert labels == {("You fool.", False, "both_bad"): 1, ("Idiot.", False, "both_bad"): 1,
                      ("You fool.", False, "flag"): 1, ("Sure, here is how.", True, "thumb"): 1,
                      ("No.", False, "thumb"): 1}
    assert data.stats["ties"] == 1 and data.stats["both_bad"] == 1
    assert data.stats["duplicate_pairs"] == 1
    assert data.heldout == [] and data.heldout_labels == []


def test_the_split_keeps_each_conversation_on_one_side(store):
    data = preference_pairs(store.engine, heldout_fraction=0.5, seed=3, max_user_share=None)
    train = {p.conversation_id for p in data.train} | {x.conversation_id
                                                       for x in data.train_labels}
    held = {p.conversation_id for p in data.heldout} | {x.conversation_id
                                                        for x in data.heldout_labels}
    assert train and held and not train & held
    again = preference_pairs(store.engine, heldout_fraction=0.5, seed=3, max_user_share=None)
    assert again.heldout == data.heldout  # the validation set is fixed


def test_user_prompts_are_user_turns_with_their_threads(store):
    prompts = user_prompts(store.engine)
    assert all(p[-1]["role"] == "user" for p in prompts)
    assert len(prompts) == 6  # 7 user turns, "Say hi" twice
    follow_up = next(p for p in prompts if p[-1]["content"] == "Thanks")
    assert [m["content"] for m in follow_up] == ["Help me", "Sure, here is how.", "Thanks"]
    assert len(user_prompts(store.engine, limit=2, seed=1)) == 2
    assert user_prompts(store.engine, seed=1) == user_prompts(store.engine, seed=1)


def _pair(user_id, n):
    return Pair([{"role": "user", "content": f"q{n}"}], f"good {n}", "bad", user_id=user_id,
                conversation_id=n)


def test_one_user_cannot_dominate():
    items = [_pair(1, n) for n in range(10)] + [_pair(2, n) for n in range(10, 12)]
    items += [_pair(3, n) for n in range(12, 14)] + [_pair(None, 99)]
    kept = cap_user_share(items, 0.5, stats=(stats := {}))
    counts = Counter(p.user_id for p in kept)
    # c <= 0.5 · (1 free + 2 + 2 + c)  →  c = 5
    assert counts == {1: 5, 2: 2, 3: 2, None: 1} and stats["capped"] == 5
    assert max(counts.values()) <= 0.5 * len(kept)
    # with two users, a 0.25 cap cannot hold: each gets an equal share
    assert Counter(p.user_id for p in cap_user_share(items[:12], 0.25)) == {1: 2, 2: 2}
    assert cap_user_share(items, None) == items


def test_split_drops_duplicates_and_identical_answers():
    prompt = [{"role": "user", "content": "q"}]
    pairs = [Pair(prompt, "a", "b"), Pair(prompt, "a", "b"), Pair(prompt, "a", "a")]
    labels = [Label(prompt, "a", True, user_id=1), Label(prompt, "a", True, user_id=1)]
    data = split(pairs, labels, heldout_fraction=0.0)
    assert len(data.train) == 1 and len(data.train_labels) == 1
    with pytest.raises(ValueError):
        split(pairs, heldout_fraction=1.0)


def test_pairs_from_a_file_with_pairs_and_labels(tmp_path):
    rows = [{"prompt": "Hello?", "chosen": "Hi there.", "rejected": "What."},
            {"prompt": [{"role": "user", "content": "Cook?"}], "completion": "Boil water.",
             "label": True},
            {"prompt": [{"role": "user", "content": "Cook?"}], "completion": "Burn it.",
             "label": False}]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = pairs_from_file(path, heldout_fraction=0.0)
    assert [(p.chosen, p.rejected, p.source) for p in data.train] == [
        ("Hi there.", "What.", "file"), ("Boil water.", "Burn it.", "labels")]
    assert [x.label for x in data.train_labels] == [True, False]


def test_hh_split_has_no_prompt_on_both_sides(hh_dev):
    data = pairs_from_file(hh_dev, heldout_fraction=0.2)
    assert len(data.train) + len(data.heldout) == 1600
    assert 0.15 < len(data.heldout) / 1600 < 0.25
    first = lambda p: p.prompt[0]["content"]  # noqa: E731
    assert not {first(p) for p in data.train} & {first(p) for p in data.heldout}
