"""/healthz, and /metrics in the Prometheus text format."""

from prometheus_client.parser import text_string_to_metric_families

from tests.server.support import ws_turn


def _metrics(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def test_healthz(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["reason"]) == ("ok", None)
    assert body["model"] == "demo" and body["demo"] is True
    assert body["live_adapter"] is None and body["loaded_adapters"] == []


def test_metrics_count_requests_tokens_votes_and_latency(client) -> None:
    client.get("/api/me")  # the browser's session, for the websocket too
    before = _metrics(client)
    with client.websocket_connect("/api/chat") as ws:
        turn = ws_turn(ws, "count me", params={"max_tokens": 5})
    api = client.post("/v1/chat/completions", json={
        "model": "demo", "messages": [{"role": "user", "content": "me too"}], "max_tokens": 3})
    assert api.status_code == 200
    vote = client.put(f"/api/messages/{turn.end()['message_id']}/rating", json={"thumb": 1})
    assert vote.status_code == 200
    after = _metrics(client)

    def grew(name: str, labels: tuple = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert grew("flywheel_requests_total", (("endpoint", "websocket"),)) == 1
    assert grew("flywheel_requests_total", (("endpoint", "openai"),)) == 1
    assert grew("flywheel_completion_tokens_total") == 5 + 3
    assert grew("flywheel_votes_total", (("kind", "rating"),)) == 1
    assert grew("flywheel_time_to_first_token_seconds_count") == 2
    assert grew("flywheel_tokens_per_second_count") == 2
    assert after[("flywheel_active_streams", ())] == 0
    assert after[("flywheel_queue_depth", ())] == 0
    assert after[("flywheel_loaded_adapters", ())] == 0
