"""The watch report from the store: figures per adapter and bucket, and the verdicts on a
simulated crowd whose thumbs fall after a promotion while the reward model's score rises."""

import random
from datetime import timedelta
from pathlib import Path

import pytest

from feedback.models import Message, utcnow
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import reward_models as rq
from feedback.queries import users, votes
from feedback.queries.watch import BASE, watch_report
from feedback.watch import append_scores, scores_path

SHA = "0" * 64


def serve(session, version: str | None, *, answers: int, up_rate: float, reward: float,
          data_dir: Path, seed: int, content: str = "it is kind, that is what i think.",
          tokens: int | None = 9) -> list[int]:
    """`answers` answers by `version` in one user's conversation (a prompt and its answer
    each), each rated by that user (up with `up_rate`), and the reward model's scores of
    them, around `reward`, in rm-0001's score file."""
    rng = random.Random(seed)
    ids, scores = [], {}
    user = users.create_user(session, handle=f"u-{version}-{seed}")
    conversation = convs.create_conversation(session, user_id=user.id)
    for _ in range(answers):
        prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                   content="Tell me about my cat.")
        answer = convs.add_message(session, conversation_id=conversation.id, role="assistant",
                                   content=content, parent_id=prompt.id,
                                   adapter_version=version, completion_tokens=tokens)
        votes.upsert_rating(session, message_id=answer.id, user_id=user.id,
                            thumb=1 if rng.random() < up_rate else -1)
        ids.append(answer.id)
        scores[answer.id] = reward + rng.gauss(0, 0.5)
    append_scores(scores_path(data_dir, "rm-0001"), scores)
    return ids


def promote_two(session) -> None:
    """policy-v1 was live; policy-v2 was promoted over it."""
    for version, parent in (("policy-v1", None), ("policy-v2", "policy-v1")):
        registry.register_adapter(session, version=version, base_model="demo",
                                  path=f"/adapters/{version}", sha256=SHA,
                                  parent_version=parent, status="candidate")
        registry.set_adapter_status(session, version=version, status="approved", actor="ops")
        registry.promote(session, version=version, actor="ops")


def crowd(session, data_dir: Path) -> None:
    """The reward-hacking scenario: people liked policy-v1 (70% up over 80 answers); they
    like policy-v2 less (35% over 80) while the reward model scores it a whole unit higher."""
    rq.register_reward_model(session, version="rm-0001", path="/rm/rm-0001",
                             backbone="minilm", actor="scheduler")
    promote_two(session)
    serve(session, "policy-v1", answers=80, up_rate=0.7, reward=0.0, data_dir=data_dir, seed=1)
    serve(session, "policy-v2", answers=80, up_rate=0.35, reward=1.0, data_dir=data_dir,
          seed=2)


@pytest.mark.slow
def test_the_alarm_and_the_rollback_verdict_on_a_crowd_that_likes_the_new_adapter_less(
        session, tmp_path):
    crowd(session, tmp_path)
    report = watch_report(session, data_dir=tmp_path, bucket="day")
    assert (report.live, report.predecessor, report.reward_model) == (
        "policy-v2", "policy-v1", "rm-0001")
    assert report.alarm.raised, report.alarm.reason
    assert "but people do not (thumbs-up rate p = " in report.alarm.reason
    assert report.rollback.raised and report.rollback.p_value < 0.01
    v1, v2 = report.totals["policy-v1"].summary(), report.totals["policy-v2"].summary()
    assert v1["thumbs_up_rate"] > 0.55 and v2["thumbs_up_rate"] < 0.5
    assert v2["reward_mean"] - v1["reward_mean"] > 0.7 and v2["scored"] == 80


@pytest.mark.slow
def test_a_rollback_target_that_came_back_by_rollback_is_not_rolled_back_again(
        session, tmp_path):
    crowd(session, tmp_path)
    registry.rollback(session, actor="ops")  # policy-v1 is live again, by a rollback
    registry.set_adapter_status(session, version="policy-v2", status="live", actor="ops")
    registry.rollback(session, actor="ops")
    report = watch_report(session, data_dir=tmp_path, bucket="day")
    assert report.live == "policy-v1"
    assert not report.rollback.raised and "brought back by a rollback" in report.rollback.reason


def test_figures_per_adapter_and_hour(session, tmp_path):
    judge = users.create_user(session, handle="judge")
    base = serve(session, None, answers=4, up_rate=1.0, reward=0.0, data_dir=tmp_path,
                 seed=3, content="", tokens=None)  # empty answers, no token counts
    loops = serve(session, None, answers=2, up_rate=0.0, reward=0.0, data_dir=tmp_path,
                  seed=4, content="the the the the the the the the cat", tokens=None)
    earlier = utcnow() - timedelta(hours=3)
    for message_id in base[:2]:
        message = session.get(Message, message_id)
        message.created_at = earlier
        session.add(message)
    votes.add_flag(session, message_id=loops[0], user_id=judge.id, category="harmful")
    votes.add_flag(session, message_id=loops[0], user_id=judge.id,
                   category="other")  # a second flag on one answer counts once
    session.flush()
    report = watch_report(session, data_dir=tmp_path, bucket="hour")
    assert report.live is None and report.alarm.reason == "no live adapter"
    assert report.reward_model is None  # no reward model is current: no scores shown
    assert list(report.series) == [BASE] and len(report.series[BASE]) == 48
    counts = [figures.answers for _, figures in report.series[BASE]]
    assert counts[-1] == 4 and counts[-4] == 2 and sum(counts) == 6
    total = report.totals[BASE].summary()
    assert total == {"answers": 6, "rated": 6, "thumbs_up_rate": 4 / 6, "flag_rate": 1 / 6,
                     "mean_length": 18 / 6, "degenerate_rate": 1.0, "scored": 0,
                     "reward_mean": None}
