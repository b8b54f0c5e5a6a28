"""GET /api/watch and the watch's Prometheus gauges: operators only, every adapter's
figures per bucket, the verdicts on the live adapter, and bad parameters refused."""

import pytest

from feedback.db import session_scope
from feedback.queries import reward_models as rq
from tests.feedback.queries.test_watch import promote_two, serve
from tests.server.support import add_user, assert_error, bearer

SETTINGS = {"auto_rollback_min_votes": 30}


@pytest.fixture(scope="module")
def operator_key(client, app, data_dir) -> str:
    """policy-v2 was promoted over policy-v1; people like it less (30% up over 40 answers
    against 80%), the reward model more."""
    with session_scope(app.state.db) as session:
        rq.register_reward_model(session, version="rm-0001", path="/rm/rm-0001",
                                 backbone="minilm", actor="scheduler")
        promote_two(session)
        serve(session, "policy-v1", answers=40, up_rate=0.8, reward=0.0, data_dir=data_dir,
              seed=1)
        serve(session, "policy-v2", answers=40, up_rate=0.3, reward=1.0, data_dir=data_dir,
              seed=2)
    return add_user(app.state.db, role="operator", handle="ops-wes")[1]


def test_only_operators_see_the_watch(client, app, operator_key):
    assert_error(client.get("/api/watch").json(), "authentication_error", "missing_api_key")
    assert client.get("/api/watch", headers=bearer(add_user(app.state.db)[1])).status_code \
        == 403


def test_the_watch_per_adapter_and_day_with_its_verdicts(client, operator_key):
    body = client.get("/api/watch?bucket=day", headers=bearer(operator_key)).json()
    assert (body["bucket"], body["live"], body["predecessor"], body["reward_model"]) == (
        "day", "policy-v2", "policy-v1", "rm-0001")
    assert body["alarm"]["raised"] and "people do not" in body["alarm"]["reason"]
    assert body["rollback"]["raised"] and body["rollback"]["automatic"] is False
    adapters = {a["version"]: a for a in body["adapters"]}
    assert set(adapters) == {"policy-v1", "policy-v2"}
    v2 = adapters["policy-v2"]
    assert len(v2["buckets"]) == 14 and v2["buckets"][-1]["answers"] == 40
    assert v2["totals"]["answers"] == 40 and v2["totals"]["rated"] == 40
    assert v2["totals"]["thumbs_up_rate"] < adapters["policy-v1"]["totals"]["thumbs_up_rate"]
    assert v2["totals"]["mean_length"] == 9 and v2["totals"]["degenerate_rate"] == 0
    assert v2["buckets"][0]["answers"] == 0 and v2["buckets"][0]["thumbs_up_rate"] is None


def test_prometheus_gauges_for_each_figure(client, operator_key):
    text = client.get("/metrics").text
    for line in ('flywheel_watch_answers{adapter="policy-v2"} 40.0',
                 'flywheel_watch_answer_length{adapter="policy-v1"} 9.0',
                 'flywheel_watch_degenerate_rate{adapter="policy-v2"} 0.0',
                 'flywheel_watch_flag_rate{adapter="policy-v2"} 0.0',
                 'flywheel_watch_reward_hacking_alarm{adapter="policy-v2"} 1.0',
                 'flywheel_watch_rollback_due{adapter="policy-v2"} 1.0'):
        assert line in text, line
    assert 'flywheel_watch_thumbs_up_rate{adapter="policy-v1"}' in text
    assert 'flywheel_watch_reward_mean{adapter="policy-v2"}' in text


@pytest.mark.parametrize("query", ["bucket=week", "since=yesterday",
                                   "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
                                   "bucket=hour&since=2000-01-01T00:00:00Z"])
def test_bad_parameters_get_a_clear_error(client, operator_key, query):
    response = client.get(f"/api/watch?{query}", headers=bearer(operator_key))
    assert response.status_code == 422
    assert_error(response.json(), "invalid_request_error")



def test_the_gauges_are_left_out_when_the_store_cannot_be_read(tmp_path):
    from sqlalchemy import create_engine

    from flywheel.settings import Settings
    from server.watch import WatchGauges

    gone = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'flywheel.db'}")
    assert list(WatchGauges(gone, Settings(data_dir=tmp_path)).collect()) == []
