"""A function judge at work through the server's routes: its votes land as AI feedback,
are measured against people's like anyone's, and weigh what they are worth — a coin or a
judge that always names the first answer shown ends at the careless floor, a judge that
agrees with people 80% of the time weighs fully — and their share of training is capped."""

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from feedback.db import session_scope
from feedback.exporter import export_feedback
from feedback.queries import conversations, votes
from feedback.queries.annotators import CARELESS_WEIGHT, annotator_quality
from feedback.queries.judging import turns_to_judge
from flywheel.demo_corpus import kindness
from flywheel.errors import FlywheelError
from flywheel.judge.functions import FunctionJudge
from flywheel.judge.runner import JudgeRunner
from flywheel.model_loading import LoadedModel
from tests.server.support import add_user, app_on_database, bearer, load_demo
from trainer.annotators import record_annotator_quality
from trainer.data import Pair, cap_ai_share, preference_pairs

pytestmark = pytest.mark.slow  # judges 90 turns with each of three judges, on each database

QUESTIONS = 30
PEOPLE = 3
JUDGES = {"coin": "flywheel.judge.functions:coin",
          "first": "flywheel.judge.functions:always_a",
          "good": "flywheel.judge.functions:kindness_80"}


class KindnessModel:
    """The reward model a cycle would train from these people: it scores kindness."""

    def score(self, prompts, completions, *, normalized=True, batch_size=32):
        import torch

        return torch.tensor([float(kindness(c)) for c in completions])


@pytest.fixture(scope="module")
def demo(models_dir: Path) -> LoadedModel:
    return load_demo(models_dir)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, tmp_path_factory) -> Iterator[FastAPI]:
    with app_on_database(request, demo, tmp_path_factory.mktemp("judged")) as app:
        yield app


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def judged(app, client) -> dict:
    """People pick the kinder of two answers (right 9 times in 10) to the same questions in
    conversations of their own; then three judges judge every turn."""
    rng = random.Random(0)
    people = [add_user(app.state.db, handle=f"person{i}")[0] for i in range(PEOPLE)]
    with session_scope(app.state.db) as s:
        for q in range(QUESTIONS):
            kind = f"it is kind and wonderful, that is what i think about thing {q}."
            unkind = f"it is rude and stupid, that is what i think about thing {q}."
            shown = (kind, unkind) if rng.random() < 0.5 else (unkind, kind)
            for person in people:
                chat = conversations.create_conversation(s, user_id=person)
                ask = conversations.add_message(s, conversation_id=chat.id, role="user",
                                                content=f"Tell me about thing {q}.")
                ids = [conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                                 content=text, parent_id=ask.id).id
                       for text in shown]
                right = "a" if shown[0] == kind else "b"
                wrong = "b" if right == "a" else "a"
                c = votes.create_comparison(s, user_id=person, prompt_message_id=ask.id,
                                            candidate_ids=ids)
                votes.record_choice(s, comparison_id=c.id, user_id=person,
                                    choice=right if rng.random() < 0.9 else wrong)
    with session_scope(app.state.db) as s:
        before = {a.handle: a for a in annotator_quality(s).annotators}
    reports = {}
    for name, spec in JUDGES.items():
        _, key = add_user(app.state.db, role="judge", handle=f"judge-{name}")
        runner = JudgeRunner(FunctionJudge(spec), app.state.db, "", key, http=client)
        assert runner.run_pass(limit=1000) == QUESTIONS * PEOPLE
        assert runner.run_pass() == 0  # nothing new since
        reports[name] = runner.report()
    record_annotator_quality(app.state.db, KindnessModel(), version="rm-1")
    with session_scope(app.state.db) as s:
        quality = {a.handle: a for a in annotator_quality(s).annotators}
    return {"reports": reports, "quality": quality, "before": before}


def test_the_runner_reports_what_the_judge_did(judged):
    good = judged["reports"]["good"]
    assert good["calls"] == 2 * QUESTIONS * PEOPLE and good["pairs"] == QUESTIONS * PEOPLE
    assert good["votes"] == {"pick": QUESTIONS * PEOPLE}
    assert good["parse_failures"] == 0 and 0.1 < good["position_flip_rate"] < 0.5
    assert good["agreement_with_people"]["consensus_items"] > QUESTIONS // 2  # decisive ones
    first = judged["reports"]["first"]
    assert first["position_flip_rate"] == 1.0  # every pair: the first answer shown


def test_judges_weigh_what_their_agreement_with_people_is_worth(judged):
    quality = judged["quality"]
    people = [quality[f"person{i}"] for i in range(PEOPLE)]
    assert all(p.weight >= 0.75 and not p.ai_feedback for p in people)
    good, coin, first = (quality[f"judge-{n}"] for n in ("good", "coin", "first"))
    assert good.ai_feedback and coin.ai_feedback and first.ai_feedback
    assert good.consensus_agreement > 0.85 and good.reward_model_agreement > 0.85
    assert good.weight >= 0.8
    assert coin.weight <= CARELESS_WEIGHT and coin.pattern == "random"
    assert first.weight <= CARELESS_WEIGHT and first.pattern == "always_tie"


def test_people_are_not_measured_against_judges(judged):
    # Judges vote on every item the people voted on, yet each person's consensus is what
    # it was before any judge voted.
    for i in range(PEOPLE):
        before, after = (judged[when][f"person{i}"] for when in ("before", "quality"))
        assert after.consensus_items == before.consensus_items > 0
        assert after.consensus_agreement == before.consensus_agreement


def test_judges_votes_are_marked_as_ai_feedback(app, client, judged, tmp_path):
    _, operator = add_user(app.state.db, role="operator")
    rows = client.get("/api/annotators", headers=bearer(operator)).json()["annotators"]
    assert {r["handle"] for r in rows if r["ai_feedback"]} == {f"judge-{n}" for n in JUDGES}
    page = client.get("/api/feedback", params={"user": "judge-good", "limit": 5},
                      headers=bearer(operator)).json()["items"]
    assert page and all(item["ai_feedback"] for item in page)
    page = client.get("/api/feedback", params={"user": "person0", "limit": 5},
                      headers=bearer(operator)).json()["items"]
    assert page and not any(item["ai_feedback"] for item in page)
    export_feedback(app.state.db, fmt="dpo", out=tmp_path / "dpo.jsonl")
    lines = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    marked = [row for row in lines if row.get("ai_feedback") is True]
    assert marked and len(marked) < len(lines)


def test_the_share_of_ai_feedback_in_training_is_capped(app, judged):
    split = preference_pairs(app.state.db, heldout_fraction=0.0, max_user_share=None,
                             ai_feedback_max_share=0.1)
    assert split.stats["ai_feedback_capped"] > 0
    prompt = [{"role": "user", "content": "q"}]
    items = [Pair(prompt, f"good {i}", "bad", user_id=1 if i < 6 else 9) for i in range(10)]
    kept = cap_ai_share(items, {9}, 0.25)
    assert sum(p.user_id == 9 for p in kept) == 2  # 2 of 8: a quarter
    assert [p for p in kept if p.user_id == 1] == items[:6]
    assert cap_ai_share(items, {9}, 1.0) == items


def test_only_judges_vote_on_other_peoples_answers(app, client, judged):
    _, person_key = add_user(app.state.db)
    judge_id, judge_key = add_user(app.state.db, role="judge")
    with session_scope(app.state.db) as s:
        (turn,) = turns_to_judge(s, judge_id=judge_id, limit=1)
    rating = {"thumb": 1}
    path = f"/api/messages/{turn.answer_ids[0]}/rating"
    assert client.put(path, json=rating, headers=bearer(person_key)).status_code == 404
    assert client.put(path, json=rating, headers=bearer(judge_key)).status_code == 200
    pick = {"prompt_message_id": turn.prompt_message_id, "candidate_ids": turn.answer_ids,
            "choice": "b"}
    assert client.post("/api/comparisons", json=pick,
                       headers=bearer(person_key)).status_code == 404
    made = client.post("/api/comparisons", json=pick, headers=bearer(judge_key))
    assert made.status_code == 201 and made.json()["choice"] == "b"
    assert client.post("/api/comparisons", json={**pick, "ranking": turn.answer_ids},
                       headers=bearer(judge_key)).status_code == 422
    assert client.get("/api/annotators", headers=bearer(judge_key)).status_code == 403
    with pytest.raises(FlywheelError, match="not a judge's"):
        JudgeRunner(FunctionJudge("flywheel.judge.functions:coin"), app.state.db, "",
                    person_key, http=client)
