"""GET /api/leaderboard: operators only, the fit over the store's battles, and parameters
checked."""

import pytest

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import users, votes
from tests.server.support import add_user, assert_error, bearer


@pytest.fixture(scope="module")
def operator_key(app) -> str:
    """policy-v1 beat the base 5 times of 6; policy-v2 lost 1 of 2 to policy-v1."""
    with session_scope(app.state.db) as session:
        judge = users.create_user(session, handle="judge")
        registry.register_adapter(session, version="policy-v1", base_model="demo",
                                  path="/a/policy-v1", sha256="0" * 64, status="candidate")
        for first, second, choice in [("policy-v1", None, "a")] * 5 + [
                (None, "policy-v1", "a"), ("policy-v2", "policy-v1", "a"),
                ("policy-v2", "policy-v1", "b")]:
            conversation = convs.create_conversation(session, user_id=judge.id)
            prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                       content="hi")
            ids = [convs.add_message(session, conversation_id=conversation.id,
                                     role="assistant", content="x", parent_id=prompt.id,
                                     adapter_version=v).id for v in (first, second)]
            comparison = votes.create_comparison(session, user_id=judge.id,
                                                 prompt_message_id=prompt.id, candidate_ids=ids)
            votes.record_choice(session, comparison_id=comparison.id, user_id=judge.id,
                                choice=choice)
    return add_user(app.state.db, role="operator", handle="ops-lea")[1]


def test_only_operators_see_the_leaderboard(client, app, operator_key):
    assert_error(client.get("/api/leaderboard").json(), "authentication_error",
                 "missing_api_key")
    response = client.get("/api/leaderboard", headers=bearer(add_user(app.state.db)[1]))
    assert response.status_code == 403


def test_the_leaderboard_rates_every_version_with_battles(client, operator_key):
    body = client.get("/api/leaderboard?resamples=200", headers=bearer(operator_key)).json()
    assert {k: body[k] for k in ("anchor", "anchor_rating", "battles", "level", "resamples")} \
        == {"anchor": "base", "anchor_rating": 1000.0, "battles": 8, "level": 0.95,
            "resamples": 200}
    rows = {row["version"]: row for row in body["standings"]}
    assert [row["version"] for row in body["standings"]][0] == "policy-v1"
    assert rows["policy-v1"]["status"] == "candidate" and rows["base"]["status"] is None
    assert rows["policy-v2"]["status"] is None  # answers from a version no longer registered
    assert (rows["policy-v1"]["wins"], rows["policy-v1"]["losses"]) == (6, 2)
    assert rows["base"]["rating"] == rows["base"]["low"] == rows["base"]["high"] == 1000
    v1 = rows["policy-v1"]
    assert v1["low"] < v1["rating"] < v1["high"] and v1["rating"] > 1000


@pytest.mark.parametrize("query", ["level=1", "level=0.3", "resamples=5", "resamples=x"])
def test_bad_parameters_get_a_clear_error(client, operator_key, query):
    response = client.get(f"/api/leaderboard?{query}", headers=bearer(operator_key))
    assert response.status_code == 422
    assert_error(response.json(), "invalid_request_error")
