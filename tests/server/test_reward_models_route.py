"""GET /api/reward-models (and /{version}): the reward-model registry for operators, in
the shape the console reads; an adapter's JSON names the reward model that trained it."""

import pytest

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import reward_models as rq
from tests.server.support import add_user, assert_error, bearer

HELDOUT = {"accuracy": 0.71, "loss": 0.57, "ece": 0.04, "pairs": 120}
WINDOW = {"since": None, "until": "2026-01-02T03:04:05+00:00", "pairs": 900,
          "heldout_pairs": 120}
KEYS = {"version", "parent_version", "status", "backbone", "path", "data_window", "heldout",
        "created_at", "updated_at", "trained_on_erased_data"}


@pytest.fixture(scope="module")
def operator_key(app, client) -> str:
    with session_scope(app.state.db) as session:
        for version, status in (("rm-0001", "current"), ("rm-0002", "current"),
                                ("rm-0003", "rejected")):
            rq.register_reward_model(
                session, version=version, path=f"/data/reward_models/{version}",
                backbone="minilm", actor="scheduler", status=status, data_window=WINDOW,
                heldout=HELDOUT, parent_version=None if version == "rm-0001" else "rm-0001")
        registry.register_adapter(session, version="policy-v1", base_model="demo",
                                  path="/adapters/policy-v1", sha256="0" * 64,
                                  reward_model_version="rm-0002")
    return add_user(app.state.db, role="operator", handle="ops-rita")[1]


@pytest.mark.parametrize("path", ["/api/reward-models", "/api/reward-models/rm-0001"])
def test_only_operators_see_reward_models(client, app, operator_key, path):
    assert_error(client.get(path).json(), "authentication_error", "missing_api_key")
    response = client.get(path, headers=bearer(add_user(app.state.db)[1]))
    assert response.status_code == 403
    assert_error(response.json(), "permission_error", "forbidden")
    assert client.get(path, headers=bearer(operator_key)).status_code == 200


def test_the_list_newest_first_and_by_status(client, operator_key):
    body = client.get("/api/reward-models", headers=bearer(operator_key)).json()
    assert [(r["version"], r["status"]) for r in body] == [
        ("rm-0003", "rejected"), ("rm-0002", "current"), ("rm-0001", "retired")]
    assert set(body[0]) == KEYS
    assert body[0]["heldout"] == HELDOUT and body[0]["data_window"] == WINDOW
    assert body[0]["parent_version"] == "rm-0001" and body[0]["backbone"] == "minilm"
    current = client.get("/api/reward-models?status=current", headers=bearer(operator_key))
    assert [r["version"] for r in current.json()] == ["rm-0002"]
    assert client.get("/api/reward-models?status=live",
                      headers=bearer(operator_key)).status_code == 422


def test_one_reward_model_with_its_audit_trail(client, operator_key):
    body = client.get("/api/reward-models/rm-0001", headers=bearer(operator_key)).json()
    assert set(body) == KEYS | {"audit"} and body["status"] == "retired"
    assert [(e["action"], e["actor"]) for e in body["audit"]] == [
        ("retired", "scheduler"), ("made_current", "scheduler"), ("registered", "scheduler")]
    assert body["audit"][0]["detail"] == {"replaced_by": "rm-0002"}
    missing = client.get("/api/reward-models/rm-0009", headers=bearer(operator_key))
    assert missing.status_code == 404
    assert "reward model rm-0009 not found" in missing.json()["error"]["message"]


def test_an_adapter_names_the_reward_model_that_trained_it(client, operator_key):
    adapter = client.get("/api/adapters/policy-v1", headers=bearer(operator_key)).json()
    assert adapter["reward_model_version"] == "rm-0002"
