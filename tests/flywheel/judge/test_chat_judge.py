"""A chat model as judge, over real HTTP: a Flywheel server on the (tiny) demo model,
whose next-token logits a test steers to the verdict it wants the model to give. The
judge's verdicts are parsed, nonsense is a parse failure, the position swap catches a
model that names the first answer shown, and its votes land as AI feedback, weighted by
how well they agree with people's."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feedback.db import session_scope
from feedback.queries import conversations, votes
from feedback.queries.annotators import CARELESS_WEIGHT, annotator_quality
from flywheel.errors import FlywheelError
from flywheel.judge.chat import ChatJudge
from flywheel.judge.rubric import load_rubric
from flywheel.judge.runner import JudgeRunner
from flywheel.judge.verdicts import JudgeStats, Verdict, judge_pair, judge_single
from flywheel.model_loading import LoadedModel
from server.app import create_app
from tests.flywheel.judge.steering import Steering, kind_verdict
from tests.server.support import LiveServer, add_user, load_demo, make_settings

KIND = "it is kind and wonderful, that is what i think about my cat."
UNKIND = "it is rude and stupid, that is what i think about my cat."


@pytest.fixture(scope="module")
def steered(models_dir: Path) -> LoadedModel:
    return load_demo(models_dir)


@pytest.fixture(scope="module")
def steering(steered) -> Steering:
    return Steering(steered)


@pytest.fixture(scope="module")
def live(steered, steering, tmp_path_factory) -> Iterator[LiveServer]:
    app = create_app(make_settings(tmp_path_factory.mktemp("judge-server"),
                                   max_new_tokens=16), model=steered)
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def judge(live, steering) -> Iterator[ChatJudge]:
    _, key = add_user(live.app.state.db, role="judge")  # its chats are no one's feedback
    steering.decide = kind_verdict
    judge = ChatJudge(f"{live.url}/v1", "flywheel", rubric=load_rubric(), api_key=key)
    yield judge
    judge.close()


def test_verdicts_come_back_over_http_in_both_orders(judge):
    stats = JudgeStats()
    assert judge_pair(judge, "Tell me about my cat.", KIND, UNKIND, stats) == Verdict.a
    assert judge_pair(judge, "Tell me about my cat.", UNKIND, KIND, stats) == Verdict.b
    assert judge_single(judge, "Tell me about my cat.", KIND, stats) == Verdict.good
    assert judge_single(judge, "Tell me about my cat.", UNKIND, stats) == Verdict.bad
    assert (stats.calls, stats.pairs, stats.flips, stats.parse_failures) == (6, 2, 0, 0)
    assert stats.prompt_tokens > 6 * 50 and stats.completion_tokens >= 6
    assert judge.ask_pair("q", KIND, UNKIND).text == "a"


def test_nonsense_is_a_parse_failure_not_a_vote(judge, steering):
    steering.decide = lambda text: "cat"
    stats = JudgeStats()
    assert judge_pair(judge, "Tell me about my cat.", KIND, UNKIND, stats) is None
    assert judge_single(judge, "Tell me about my cat.", KIND, stats) is None
    assert (stats.parse_failures, stats.pairs, stats.singles) == (2, 0, 0)


def test_the_swap_catches_a_judge_that_names_the_first_answer(judge, steering):
    steering.decide = lambda text: "a"
    stats = JudgeStats()
    assert judge_pair(judge, "Tell me about my cat.", KIND, UNKIND, stats) == Verdict.tie
    assert stats.summary()["position_flip_rate"] == 1.0


@pytest.mark.slow
def test_its_votes_are_ai_feedback_weighted_by_agreement_with_people(live, steering):
    db = live.app.state.db
    people = [add_user(db, handle=f"voter{i}")[0] for i in range(3)]
    with session_scope(db) as s:
        for q in range(12):
            shown = (KIND, UNKIND) if q % 2 else (UNKIND, KIND)
            for person in people:
                chat = conversations.create_conversation(s, user_id=person)
                ask = conversations.add_message(s, conversation_id=chat.id, role="user",
                                                content=f"Tell me about thing {q}.")
                ids = [conversations.add_message(s, conversation_id=chat.id, role="assistant",
                                                 content=f"{text} {q}", parent_id=ask.id).id
                       for text in shown]
                c = votes.create_comparison(s, user_id=person, prompt_message_id=ask.id,
                                            candidate_ids=ids)
                votes.record_choice(s, comparison_id=c.id, user_id=person,
                                    choice="a" if shown[0] == KIND else "b")
    reports = {}
    for name, decide in (("fair", kind_verdict),
                         ("contrary", lambda text: {"a": "b", "b": "a"}.get(
                             kind_verdict(text), "tie"))):
        steering.decide = decide
        _, key = add_user(db, role="judge", handle=f"judge-{name}")
        judge = ChatJudge(f"{live.url}/v1", "flywheel", rubric=load_rubric(), api_key=key)
        runner = JudgeRunner(judge, db, live.url, key)
        assert runner.run_pass() == 36  # every person's turn; not its own chat calls
        reports[name] = runner.report()
        runner.close()
        judge.close()
    fair, contrary = reports["fair"], reports["contrary"]
    assert fair["votes"] == {"pick": 36} and fair["position_flips"] == 0
    assert fair["calls"] == 72 and fair["prompt_tokens"] > 0
    assert fair["agreement_with_people"]["consensus_agreement"] == 1.0
    assert fair["agreement_with_people"]["weight"] == 1.0
    assert contrary["agreement_with_people"]["consensus_agreement"] == 0.0
    assert contrary["agreement_with_people"]["weight"] == CARELESS_WEIGHT
    with session_scope(db) as s:
        rows = {a.handle: a for a in annotator_quality(s).annotators}
    assert rows["judge-fair"].ai_feedback and rows["judge-contrary"].ai_feedback
    assert not rows["voter0"].ai_feedback and rows["voter0"].weight == 1.0


def test_rate_limits_are_waited_out_and_errors_are_clear(monkeypatch):
    monkeypatch.setattr("flywheel.judge.chat.time.sleep", lambda seconds: None)
    replies = iter([httpx.Response(429, headers={"Retry-After": "1"}),
                    httpx.Response(503),
                    httpx.Response(200, json={"choices": [{"message": {"content": "B"}}],
                                              "usage": {"prompt_tokens": 9,
                                                        "completion_tokens": 1}})])
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(replies)

    judge = ChatJudge("http://judge.test/v1", "m", rubric=load_rubric(), api_key="sk-1",
                      transport=httpx.MockTransport(answer))
    reply = judge.ask_pair("q", "one", "two")
    assert (reply.verdict, reply.prompt_tokens, reply.completion_tokens) == (Verdict.b, 9, 1)
    assert len(seen) == 3 and seen[0].headers["authorization"] == "Bearer sk-1"
    assert json.loads(seen[0].content)["temperature"] == 0
    broken = ChatJudge("http://judge.test/v1", "m", rubric=load_rubric(),
                       transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    with pytest.raises(FlywheelError, match="OpenAI chat format"):
        broken.ask_single("q", "one")
    refused = ChatJudge("http://judge.test/v1", "m", rubric=load_rubric(),
                        transport=httpx.MockTransport(lambda r: httpx.Response(401)))
    with pytest.raises(FlywheelError, match="answered 401"):
        refused.ask_single("q", "one")
