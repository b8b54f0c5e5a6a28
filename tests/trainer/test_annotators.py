"""Reward-model agreement per user (stored for annotator quality), and the down-weighting
of careless users' votes in the training data."""

import pytest
import torch

from feedback.db import session_scope
from feedback.queries import conversations, users, votes
from feedback.queries.annotators import CARELESS_WEIGHT, annotator_quality
from trainer.annotators import record_annotator_quality
from trainer.data import SOURCE_WEIGHTS, Pair, preference_pairs, split


class GoodWordModel:
    """A stand-in reward model: an answer with "good" in it scores 1, others 0."""

    def score(self, prompts, completions, *, normalized=True, batch_size=32):
        assert len(prompts) == len(completions)
        return torch.tensor([float("good" in c) for c in completions])


def _pick(session, user, prompt, a, b, choice):
    chat = conversations.create_conversation(session, user_id=user.id)
    question = conversations.add_message(session, conversation_id=chat.id, role="user",
                                         content=prompt)
    ma, mb = (conversations.add_message(session, conversation_id=chat.id, role="assistant",
                                        content=text, parent_id=question.id) for text in (a, b))
    c = votes.create_comparison(session, user_id=user.id, prompt_message_id=question.id,
                                candidate_ids=[ma.id, mb.id])
    votes.record_choice(session, comparison_id=c.id, user_id=user.id, choice=choice)
    return ma, mb


@pytest.fixture
def store(engine):
    """Three honest users, an adversary (picks the bad answer) on the same twelve
    questions, and an always-A clicker on questions of its own; the honest users also
    give thumbs."""
    with session_scope(engine) as s:
        people = {h: users.create_user(s, handle=h)
                  for h in ("honest", "honest2", "honest3", "liar", "clicker")}
        for i in range(12):
            a, b = (f"good {i}", f"bad {i}") if i % 2 else (f"bad {i}", f"good {i}")
            better, worse = ("a", "b") if i % 2 else ("b", "a")
            for h in ("honest", "honest2", "honest3"):
                ma, _ = _pick(s, people[h], f"q{i}", a, b, better)
                votes.upsert_rating(s, message_id=ma.id, user_id=people[h].id,
                                    thumb=1 if "good" in a else -1)
            _pick(s, people["liar"], f"q{i}", a, b, worse)
            _pick(s, people["clicker"], f"c{i}", a, b, "a")
        return {h: u.id for h, u in people.items()}


def test_agreement_with_the_reward_model_is_stored(engine, store):
    assert record_annotator_quality(engine, GoodWordModel(), version="rm-7") == 5
    with session_scope(engine) as s:
        report = annotator_quality(s)
    found = {a.handle: a for a in report.annotators}
    assert report.reward_model == "rm-7"
    assert found["honest"].reward_model_agreement == 1.0
    assert found["liar"].reward_model_agreement == 0.0
    assert found["clicker"].reward_model_agreement == 0.5
    assert found["clicker"].pattern == "always_a"
    assert found["liar"].weight == CARELESS_WEIGHT  # inverted: no better than the floor


def test_careless_votes_weigh_less_in_training(engine, store):
    record_annotator_quality(engine, GoodWordModel(), version="rm-7")
    weighted = preference_pairs(engine, heldout_fraction=0.0, max_user_share=None)
    by_user: dict[int, set[float]] = {}
    for pair in weighted.train:
        by_user.setdefault(pair.user_id, set()).add(pair.weight)
    choice = SOURCE_WEIGHTS["choice"]
    assert by_user[store["honest"]] == {choice}  # its duplicates by honest2/3 dropped
    assert by_user[store["clicker"]] == {choice * CARELESS_WEIGHT}
    assert by_user[store["liar"]] == {choice * CARELESS_WEIGHT}
    labels = {x.weight for x in weighted.train_labels}
    assert labels == {1.0}  # the honest users' thumbs
    assert weighted.stats["downweighted"] == 24

    plain = preference_pairs(engine, heldout_fraction=0.0, max_user_share=None,
                             annotator_weighting=False)
    assert {p.weight for p in plain.train if p.source == "choice"} == {1.0}
    assert "downweighted" not in plain.stats


def test_duplicates_keep_the_heaviest():
    prompt = [{"role": "user", "content": "q"}]
    light = Pair(prompt, "good", "bad", 0.1, "choice", 1, user_id=7)
    heavy = Pair(prompt, "good", "bad", 1.0, "choice", 2, user_id=8)
    other = Pair(prompt, "fine", "bad", 1.0, "choice", 3, user_id=8)
    kept = split([light, other, heavy], heldout_fraction=0.0, max_user_share=None).train
    assert kept == [heavy, other]
