"""GET /api/annotators: annotator quality for operators, in the console's exact shape."""

from feedback.db import session_scope
from feedback.queries.annotators import save_reward_model_agreement
from tests.server.support import add_user, assert_error, bearer, ws_turn

ANNOTATOR_KEYS = {"user_id", "handle", "votes", "consensus_agreement", "consensus_items",
                  "reward_model_agreement", "pattern", "weight", "ai_feedback"}


def test_only_operators_see_annotators(client, app):
    _, user_key = add_user(app.state.db)
    _, operator_key = add_user(app.state.db, role="operator")
    assert_error(client.get("/api/annotators").json(), "authentication_error",
                 "missing_api_key")
    response = client.get("/api/annotators", headers=bearer(user_key))
    assert response.status_code == 403
    assert_error(response.json(), "permission_error", "forbidden")
    assert client.get("/api/annotators", headers=bearer(operator_key)).status_code == 200


def test_the_shape_the_console_reads(client, app):
    voter_id, voter_key = add_user(app.state.db, handle="voter")
    _, operator_key = add_user(app.state.db, role="operator", handle="ops")
    with client.websocket_connect("/api/chat", headers=bearer(voter_key)) as ws:
        for i in range(3):
            turn = ws_turn(ws, f"Tell me about my cat {i}.")
            message_id = turn.end("a")["message_id"]
            assert client.put(f"/api/messages/{message_id}/rating", json={"thumb": 1},
                              headers=bearer(voter_key)).status_code == 200
    with session_scope(app.state.db) as session:
        save_reward_model_agreement(session, reward_model="rm-20260101-000000",
                                    agreement={voter_id: (0.75, 3)})

    body = client.get("/api/annotators", headers=bearer(operator_key)).json()
    assert set(body) == {"reward_model", "annotators"}
    assert body["reward_model"] == "rm-20260101-000000"
    (row,) = [a for a in body["annotators"] if a["user_id"] == voter_id]
    assert set(row) == ANNOTATOR_KEYS
    assert row == {"user_id": voter_id, "handle": "voter", "votes": 3,
                   "consensus_agreement": None, "consensus_items": 0,
                   "reward_model_agreement": 0.75, "pattern": None, "weight": 1.0,
                   "ai_feedback": False}
    assert all(a["handle"] != "ops" for a in body["annotators"])  # no votes, not listed
