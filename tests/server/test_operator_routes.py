"""Operator routes: who may call them, the adapter lifecycle through them (approve, reject,
promote, roll back, canary share), their errors, training runs, and the audit trail."""

from pathlib import Path

import pytest

from feedback.db import session_scope
from feedback.queries import adapters as registry
from feedback.queries import runs
from flywheel.adapter_store import AdapterStore
from tests.server.hotswap_fixtures import AdapterMaker, register
from tests.server.support import add_user, assert_error, bearer

SETTINGS = {"adapter_poll_s": 3600.0}  # only the routes' own reconciling
OPERATOR = "ops-olga"

ROUTES = [
    ("GET", "/api/adapters", None),
    ("GET", "/api/adapters/policy-none", None),
    ("POST", "/api/adapters/policy-none/approve", None),
    ("POST", "/api/adapters/policy-none/reject", None),
    ("POST", "/api/adapters/policy-none/promote", None),
    ("POST", "/api/adapters/rollback", None),
    ("PUT", "/api/adapters/policy-none/traffic", {"share": 0.5}),
    ("GET", "/api/training-runs", None),
]


@pytest.fixture(scope="module")
def keys(client, app) -> dict[str, str]:
    return {"user": add_user(app.state.db)[1],
            "operator": add_user(app.state.db, role="operator", handle=OPERATOR)[1],
            "admin": add_user(app.state.db, role="admin")[1]}


@pytest.fixture(scope="module")
def make(app, models_dir: Path):
    """make(version, status): a stored, registered adapter."""
    maker = AdapterMaker(models_dir)
    store = AdapterStore(app.state.settings.adapters_dir)
    seeds = iter(range(1, 1000))

    def make(version: str, status: str = "approved") -> None:
        register(app.state.db, maker.make(store, version, seed=next(seeds)), status=status)

    return make


@pytest.fixture(scope="module")
def op(client, keys):
    """op(method, path, json=None) -> response, as the operator."""
    return lambda method, path, json=None: client.request(
        method, path, json=json, headers=bearer(keys["operator"]))


# -- who may call ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_operator_routes_need_an_operator_key(client, keys, method, path, body) -> None:
    response = client.request(method, path, json=body)  # the browser's session cookie only
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(response.json(), "authentication_error", "missing_api_key")

    response = client.request(method, path, json=body, headers=bearer("fw-not-a-key"))
    assert response.status_code == 401
    assert_error(response.json(), "authentication_error", "invalid_api_key")

    response = client.request(method, path, json=body, headers=bearer(keys["user"]))
    assert response.status_code == 403
    assert_error(response.json(), "permission_error", "forbidden")

    for role in ("operator", "admin"):  # past the gate: 200, or what the action says
        response = client.request(method, path, json=body, headers=bearer(keys[role]))
        assert response.status_code not in (401, 403), response.text
        if method == "GET" and "policy-none" not in path:
            assert response.status_code == 200


# -- errors ----------------------------------------------------------------------------------


def test_illegal_moves_are_conflicts_in_the_one_error_shape(op, make) -> None:
    response = op("POST", "/api/adapters/rollback")  # (first: nothing was ever live)
    assert response.status_code == 409
    assert_error(response.json(), "conflict_error", "registry_conflict")
    assert "nothing to roll back" in response.json()["error"]["message"]

    make("policy-e1", status="candidate")
    response = op("POST", "/api/adapters/policy-e1/promote")  # not approved yet
    assert response.status_code == 409
    assert_error(response.json(), "conflict_error", "registry_conflict")
    assert "cannot go from candidate to live" in response.json()["error"]["message"]

    assert op("POST", "/api/adapters/policy-e1/reject").status_code == 200
    for action in ("approve", "promote", "reject"):  # rejected is final
        response = op("POST", f"/api/adapters/policy-e1/{action}")
        assert response.status_code == 409, action
        assert_error(response.json(), "conflict_error", "registry_conflict")
    response = op("PUT", "/api/adapters/policy-e1/traffic", {"share": 0.2})
    assert response.status_code == 409
    assert "only a candidate or approved adapter" in response.json()["error"]["message"]

    make("policy-e2")
    make("policy-e3")
    assert op("PUT", "/api/adapters/policy-e2/traffic", {"share": 0.7}).status_code == 200
    response = op("PUT", "/api/adapters/policy-e3/traffic", {"share": 0.5})
    assert response.status_code == 409
    assert "more than 1" in response.json()["error"]["message"]
    assert op("PUT", "/api/adapters/policy-e2/traffic", {"share": 0}).status_code == 200


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("POST", "/api/adapters/policy-nope/approve", None, 404, "not_found"),
    ("GET", "/api/adapters/policy-nope", None, 404, "not_found"),
    ("PUT", "/api/adapters/policy-nope/traffic", {"share": 0.5}, 404, "not_found"),
    ("PUT", "/api/adapters/policy-e2/traffic", {"share": 1.5}, 422, "invalid_request"),
    ("PUT", "/api/adapters/policy-e2/traffic", {}, 422, "invalid_request"),
    ("GET", "/api/adapters?status=shiny", None, 422, "invalid_request"),
    ("GET", "/api/training-runs?kind=dance", None, 422, "invalid_request"),
    ("GET", "/api/training-runs?limit=0", None, 422, "invalid_request"),
])
def test_bad_requests_get_clear_errors(op, method, path, body, status, code) -> None:
    response = op(method, path, body)
    assert response.status_code == status, response.text
    assert_error(response.json(), "not_found_error" if status == 404
                 else "invalid_request_error", code)


# -- the lifecycle ---------------------------------------------------------------------------


def test_approve_promote_roll_back_and_reject(op, make, app) -> None:
    make("policy-l1", status="candidate")
    with session_scope(app.state.db) as session:
        registry.set_eval_report(session, version="policy-l1",
                                 report={"win_rate": 0.61, "kl": 0.8})
    candidates = op("GET", "/api/adapters?status=candidate").json()
    assert [a["version"] for a in candidates] == ["policy-l1"]
    assert candidates[0]["eval_report"] == {"win_rate": 0.61, "kl": 0.8}
    assert candidates[0]["status"] == "candidate"

    approved = op("POST", "/api/adapters/policy-l1/approve").json()
    assert (approved["status"], approved["traffic_share"]) == ("approved", 0.0)
    canary = op("PUT", "/api/adapters/policy-l1/traffic", {"share": 0.25}).json()
    assert (canary["traffic_share"], canary["loaded"]) == (0.25, True)
    assert app.state.adapters.canary == {"policy-l1": 0.25}

    live = op("POST", "/api/adapters/policy-l1/promote").json()
    assert (live["status"], live["traffic_share"], live["loaded"]) == ("live", 0.0, True)
    assert app.state.adapters.live == "policy-l1" and app.state.adapters.canary == {}

    make("policy-l2")
    assert op("POST", "/api/adapters/policy-l2/promote").json()["status"] == "live"
    assert op("GET", "/api/adapters/policy-l1").json()["status"] == "retired"
    assert app.state.adapters.live == "policy-l2"

    back = op("POST", "/api/adapters/rollback").json()
    assert (back["version"], back["status"], back["loaded"]) == ("policy-l1", "live", True)
    assert op("GET", "/api/adapters/policy-l2").json()["status"] == "retired"
    assert app.state.adapters.live == "policy-l1"

    make("policy-l3", status="candidate")
    assert op("POST", "/api/adapters/policy-l3/reject").json()["status"] == "rejected"
    assert "policy-l3" not in app.state.adapters.routable()

    listed = {a["version"]: a["status"] for a in op("GET", "/api/adapters").json()}
    assert {v: s for v, s in listed.items() if v.startswith("policy-l")} == {
        "policy-l1": "live", "policy-l2": "retired", "policy-l3": "rejected"}
    assert list(listed) == sorted(listed, key=lambda v: -_registered_order(app, v))

    with session_scope(app.state.db) as session:
        events = [e for e in reversed(registry.list_audit_events(session, limit=500))
                  if (e.adapter_version or "").startswith("policy-l")]
    assert [(e.action, e.adapter_version, e.actor) for e in events] == [
        ("approve", "policy-l1", OPERATOR),
        ("traffic", "policy-l1", OPERATOR),
        ("promote", "policy-l1", OPERATOR),
        ("approve", "policy-l2", "hotswap-test"),  # by the test's own registering
        ("retire", "policy-l1", OPERATOR),
        ("promote", "policy-l2", OPERATOR),
        ("rollback", "policy-l2", OPERATOR),
        ("rollback", "policy-l1", OPERATOR),
        ("reject", "policy-l3", OPERATOR),
    ]
    operator_id = next(e.actor_id for e in events if e.actor == OPERATOR)
    assert operator_id is not None
    assert all(e.actor_id == operator_id for e in events if e.actor == OPERATOR)
    assert events[1].detail == {"share": 0.25}
    assert events[-2].detail["rolled_back"] == "policy-l2"


def _registered_order(app, version: str) -> int:
    with session_scope(app.state.db) as session:
        return registry.get_adapter(session, version=version).id


# -- training runs ---------------------------------------------------------------------------


def test_training_runs_are_listed_newest_first_and_filtered(op, app) -> None:
    with session_scope(app.state.db) as session:
        reward = runs.start_run(session, kind="reward", config={"lr": 1e-4},
                                data_window={"max_message_id": 10})
        runs.finish_run(session, run_id=reward.id, metrics={"accuracy": 0.7})
        ppo = runs.start_run(session, kind="ppo", config={}, data_window={})
        runs.fail_run(session, run_id=ppo.id, error="KL blew up")
        cycle = runs.start_run(session, kind="cycle", config={}, data_window={})
        ids = (reward.id, ppo.id, cycle.id)

    listed = op("GET", "/api/training-runs").json()
    assert [r["id"] for r in listed][:3] == list(reversed(ids))
    by_id = {r["id"]: r for r in listed}
    assert by_id[ids[0]]["metrics"] == {"accuracy": 0.7}
    assert by_id[ids[0]]["data_window"] == {"max_message_id": 10}
    assert (by_id[ids[1]]["status"], by_id[ids[1]]["error"]) == ("failed", "KL blew up")
    assert (by_id[ids[2]]["status"], by_id[ids[2]]["finished_at"]) == ("running", None)

    assert [r["id"] for r in op("GET", "/api/training-runs?kind=ppo").json()] == [ids[1]]
    assert [r["id"] for r in op("GET", "/api/training-runs?status=running").json()] == [
        ids[2]]
    assert len(op("GET", "/api/training-runs?limit=2").json()) == 2


def test_a_candidate_shows_how_users_judged_it_against_live(op, make, app) -> None:
    from feedback.queries import conversations as convs
    from feedback.queries import users, votes

    make("judged-live", "live")
    make("judged-cand", "candidate")
    with session_scope(app.state.db) as session:
        judge = users.create_user(session, handle="judge")
        for shown_first, choice in [("judged-cand", "a"), ("judged-live", "b"),
                                    ("judged-live", "a"), ("judged-cand", "tie")]:
            conversation = convs.create_conversation(session, user_id=judge.id)
            prompt = convs.add_message(session, conversation_id=conversation.id, role="user",
                                       content="which?")
            other = "judged-live" if shown_first == "judged-cand" else "judged-cand"
            ids = [convs.add_message(session, conversation_id=conversation.id,
                                     role="assistant", content=v, parent_id=prompt.id,
                                     adapter_version=v).id for v in (shown_first, other)]
            comparison = votes.create_comparison(session, user_id=judge.id,
                                                 prompt_message_id=prompt.id,
                                                 candidate_ids=ids)
            votes.record_choice(session, comparison_id=comparison.id, user_id=judge.id,
                                choice=choice)
    shown = op("GET", "/api/adapters/judged-cand").json()["live_battles"]
    assert {k: shown[k] for k in ("opponent", "wins", "losses", "ties")} == {
        "opponent": "judged-live", "wins": 2, "losses": 1, "ties": 1}
    assert shown["win_rate"] == 0.625 and shown["low"] <= 0.625 <= shown["high"]
    assert op("GET", "/api/adapters/judged-live").json()["live_battles"] is None
