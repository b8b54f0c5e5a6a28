"""Two servers of one deployment on one PostgreSQL database (and one adapter store, and
one Redis for rate limits): an operator's promotion, rollback and canary share on either
reaches the other by polling, and a user's rate limit holds across both together."""

import os

import httpx
import pytest
import redis

import server.adapters
from flywheel.adapter_store import AdapterStore
from server.app import create_app
from tests.conftest import PG_SERVER
from tests.server.hotswap_fixtures import AdapterMaker, register
from tests.server.support import (
    LiveServer,
    add_user,
    bearer,
    fresh_pg_database,
    load_demo,
    make_settings,
    wait_until,
)

pytestmark = pytest.mark.slow

REDIS = os.environ.get("FLYWHEEL_TEST_REDIS", "127.0.0.1:6379")
POLL_S = 0.1


@pytest.fixture(scope="module")
def redis_url() -> str:
    url = f"redis://{REDIS}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis unreachable at {REDIS}: {e}")
    return url


@pytest.fixture(scope="module")
def replicas(pg_server, redis_url, models_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("replicas")
    patch = pytest.MonkeyPatch()
    patch.setattr(server.adapters, "DRAIN_GRACE_S", 0.3)
    with fresh_pg_database(pg_server, PG_SERVER) as url:
        settings = {"db": url, "adapter_poll_s": POLL_S, "rate_limit_per_minute": 3,
                    "rate_limit_storage": redis_url}
        servers = [LiveServer(create_app(make_settings(data_dir, **settings),
                                         model=load_demo(models_dir))) for _ in range(2)]
        try:
            yield [s.__enter__() for s in servers]
        finally:
            for s in servers:
                s.__exit__(None, None, None)
            patch.undo()


@pytest.fixture(scope="module")
def operator(replicas) -> dict[str, str]:
    return bearer(add_user(replicas[0].app.state.db, role="operator")[1])


def _act(replica, headers, method: str, path: str, **kwargs) -> dict:
    response = httpx.request(method, f"{replica.url}{path}", headers=headers, timeout=60,
                             **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def _served(replica) -> tuple:
    health = httpx.get(f"{replica.url}/healthz").json()
    return health["live_adapter"], health["canary"]


def test_promotions_rollbacks_and_canaries_converge_across_replicas(replicas, operator,
                                                                   models_dir) -> None:
    one, two = replicas
    store = AdapterStore(one.app.state.settings.adapters_dir)
    maker = AdapterMaker(models_dir)
    for seed, version in enumerate(["policy-r1", "policy-r2", "policy-r3"], start=1):
        register(one.app.state.db, maker.make(store, version, seed=seed))

    # Each action on one replica; the other follows by polling PostgreSQL.
    steps = [(one, "POST", "/api/adapters/policy-r1/promote", {}, ("policy-r1", {})),
             (two, "POST", "/api/adapters/policy-r2/promote", {}, ("policy-r2", {})),
             (one, "POST", "/api/adapters/rollback", {}, ("policy-r1", {})),
             (two, "PUT", "/api/adapters/policy-r3/traffic", {"json": {"share": 0.25}},
              ("policy-r1", {"policy-r3": 0.25})),
             (one, "PUT", "/api/adapters/policy-r3/traffic", {"json": {"share": 0}},
              ("policy-r1", {}))]
    for acted_on, method, path, kwargs, expected in steps:
        _act(acted_on, operator, method, path, **kwargs)
        assert _served(acted_on) == expected, path  # at once where it was acted on
        for replica in replicas:
            wait_until(lambda r=replica, e=expected: _served(r) == e, 10,
                       f"{replica.url} to converge after {path}")
    for replica in replicas:
        wait_until(lambda r=replica: r.app.state.adapters.loaded.keys() == {"policy-r1"}, 10,
                   "the retired adapters to unload")


def test_a_user_s_rate_limit_holds_across_replicas(replicas, redis_url) -> None:
    user_id, key = add_user(replicas[0].app.state.db)
    client = redis.Redis.from_url(redis_url)
    stale = list(client.scan_iter(f"*flywheel-user/{user_id}/*"))  # an earlier run's
    if stale:
        client.delete(*stale)

    def ask(replica) -> int:
        return httpx.post(f"{replica.url}/v1/chat/completions", headers=bearer(key),
                          timeout=60, json={"model": "demo", "max_tokens": 1, "messages": [
                              {"role": "user", "content": "hi"}]}).status_code

    assert [ask(r) for r in (replicas[0], replicas[1], replicas[0])] == [200, 200, 200]
    assert ask(replicas[1]) == 429 and ask(replicas[0]) == 429  # 3 a minute in all
