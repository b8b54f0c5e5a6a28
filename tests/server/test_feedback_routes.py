"""Votes over REST — ratings, comparisons, rewrites, flags — and the user's conversations,
on SQLite and on PostgreSQL."""

import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from sqlmodel import select

from feedback.models import Comparison, Flag, Message, Rating, Rewrite
from tests.server.support import (
    add_user,
    app_on_database,
    assert_error,
    bearer,
    db_session,
    ws_turn,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def app(request, demo, data_dir) -> Iterator[FastAPI]:
    """The app on each database (overrides the module-wide one of conftest)."""
    with app_on_database(request, demo, data_dir) as app:
        yield app


def _answers(client, n: int = 1, headers: dict | None = None) -> tuple[int, list[int]]:
    """Ask the OpenAI route for `n` answers; returns (the prompt's id, the answers' ids)."""
    response = client.post("/v1/chat/completions", headers=headers or {}, json={
        "model": "demo", "messages": [{"role": "user", "content": "rate me"}],
        "max_tokens": 2, "n": n, "seed": 1, "temperature": 1.0})
    assert response.status_code == 200, response.text
    ids = [c["message_id"] for c in response.json()["choices"]]
    with db_session(client.app) as session:
        return session.get(Message, ids[0]).parent_id, ids


def _votes(app, model, **where) -> list:
    with db_session(app) as session:
        query = select(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return list(session.exec(query))


def _metric(client, kind: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'flywheel_votes_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_every_kind_of_feedback_is_stored(app, client) -> None:
    _, (answer,) = _answers(client)
    me = client.get("/api/me").json()["id"]
    counts = {k: _metric(client, k) for k in ("rating", "rewrite", "flag", "ranking",
                                               "comparison")}

    rating = client.put(f"/api/messages/{answer}/rating",
                        json={"thumb": -1, "reasons": ["wrong", "rude"], "comment": "meh"})
    rewrite = client.post(f"/api/messages/{answer}/rewrites", json={"content": "Better."})
    flag = client.post(f"/api/messages/{answer}/flags",
                       json={"category": "harmful", "comment": "careful"})
    _, pair = _answers(client, n=2)
    ranking = client.post("/api/comparisons", json={
        "prompt_message_id": _prompt_of(app, pair[0]), "ranking": pair[::-1]})
    with client.websocket_connect("/api/chat") as ws:
        battle = ws_turn(ws, "two please", side_by_side=True, params={"max_tokens": 2})
    comparison_id = battle.done["comparison_id"]
    verdict = client.post(f"/api/comparisons/{comparison_id}/verdict", json={"choice": "b"})

    assert rating.status_code == 200 and rating.json() == {
        "id": rating.json()["id"], "message_id": answer, "thumb": -1,
        "reasons": ["wrong", "rude"], "comment": "meh"}
    assert rewrite.status_code == 201 and rewrite.json()["content"] == "Better."
    assert flag.status_code == 201 and flag.json()["category"] == "harmful"
    assert ranking.status_code == 201 and ranking.json()["candidate_ids"] == pair[::-1]
    assert verdict.status_code == 200 and verdict.json()["choice"] == "b"

    [stored_rating] = _votes(app, Rating, message_id=answer)
    assert (stored_rating.user_id, stored_rating.thumb, stored_rating.reasons,
            stored_rating.comment) == (me, -1, ["wrong", "rude"], "meh")
    [stored_rewrite] = _votes(app, Rewrite, message_id=answer)
    assert (stored_rewrite.user_id, stored_rewrite.content) == (me, "Better.")
    [stored_flag] = _votes(app, Flag, message_id=answer)
    assert (stored_flag.category, stored_flag.comment) == ("harmful", "careful")
    stored_ranking = _votes(app, Comparison, id=ranking.json()["id"])[0]
    assert (stored_ranking.ranking, stored_ranking.choice) == (pair[::-1], None)
    stored_battle = _votes(app, Comparison, id=comparison_id)[0]
    assert (stored_battle.user_id, stored_battle.choice) == (me, "b")
    assert stored_battle.candidate_ids == [battle.end("a")["message_id"],
                                           battle.end("b")["message_id"]]
    assert stored_battle.prompt_message_id == battle.start["message_id"]
    for kind in counts:
        assert _metric(client, kind) == counts[kind] + 1, kind


def _prompt_of(app, message_id: int) -> int:
    with db_session(app) as session:
        return session.get(Message, message_id).parent_id


def test_voting_again_updates_the_vote(app, client) -> None:
    _, (answer,) = _answers(client)
    for thumb, reasons in ((1, []), (-1, ["long"]), (1, ["helpful"])):
        response = client.put(f"/api/messages/{answer}/rating",
                              json={"thumb": thumb, "reasons": reasons})
        assert response.status_code == 200
    for comment in ("first", "second"):
        assert client.post(f"/api/messages/{answer}/flags",
                           json={"category": "privacy", "comment": comment}).status_code == 201
    assert client.post(f"/api/messages/{answer}/flags",
                       json={"category": "other"}).status_code == 201

    [rating] = _votes(app, Rating, message_id=answer)
    assert (rating.thumb, rating.reasons) == (1, ["helpful"])
    flags = sorted((f.category, f.comment) for f in _votes(app, Flag, message_id=answer))
    assert flags == [("other", ""), ("privacy", "second")]

    prompt, pair = _answers(client, n=2)
    ranked = client.post("/api/comparisons",
                         json={"prompt_message_id": prompt, "ranking": pair}).json()
    for verdict in ({"choice": "tie"}, {"ranking": pair[::-1]}, {"choice": "a"}):
        response = client.post(f"/api/comparisons/{ranked['id']}/verdict", json=verdict)
        assert response.status_code == 200, response.text
    [comparison] = _votes(app, Comparison, prompt_message_id=prompt)
    assert (comparison.choice, comparison.ranking) == ("a", None)


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), [
    ("put", "/api/messages/{answer}/rating", {"thumb": 0}, 422, "invalid_feedback"),
    ("put", "/api/messages/{answer}/rating", {"thumb": "up"}, 422, "invalid_request"),
    ("put", "/api/messages/{answer}/rating", {}, 422, "invalid_request"),
    ("put", "/api/messages/{answer}/rating", {"thumb": 1, "reasons": ["r" * 65]}, 422,
     "invalid_request"),
    ("put", "/api/messages/{answer}/rating", {"thumb": 1, "reasons": ["r"] * 17}, 422,
     "invalid_request"),
    ("put", "/api/messages/{question}/rating", {"thumb": 1}, 422, "invalid_feedback"),
    ("put", "/api/messages/999999999/rating", {"thumb": 1}, 404, "not_found"),
    ("put", f"/api/messages/{2**64}/rating", {"thumb": 1}, 422, "invalid_request"),
    ("put", "/api/messages/abc/rating", {"thumb": 1}, 422, "invalid_request"),
    ("post", "/api/messages/{answer}/rewrites", {"content": ""}, 422, "invalid_request"),
    ("post", "/api/messages/{answer}/rewrites", {"content": "   "}, 422, "invalid_feedback"),
    ("post", "/api/messages/{answer}/rewrites", {"content": "x" * 32_001}, 422,
     "invalid_request"),
    ("post", "/api/messages/{answer}/flags", {"category": "ugly"}, 422, "invalid_request"),
    ("post", "/api/comparisons", {"prompt_message_id": "{question}", "ranking": ["{answer}"]},
     422, "invalid_request"),
    ("post", "/api/comparisons", {"prompt_message_id": "{answer}",
                                  "ranking": ["{answer}", "{question}"]},
     422, "invalid_feedback"),
    ("post", "/api/comparisons/{comparison}/verdict", {}, 422, "invalid_request"),
    ("post", "/api/comparisons/{comparison}/verdict",
     {"choice": "a", "ranking": ["{answer}", "{other}"]}, 422, "invalid_request"),
    ("post", "/api/comparisons/{comparison}/verdict",
     {"ranking": ["{answer}", "{question}"]}, 422, "invalid_feedback"),
    ("post", "/api/comparisons/999999999/verdict", {"choice": "a"}, 404, "not_found"),
])
def test_bad_votes_are_refused_in_the_one_error_shape(app, client, method, path, body,
                                                      status, code) -> None:
    question, (answer, other) = _answers(client, n=2)
    comparison = client.post("/api/comparisons", json={
        "prompt_message_id": question, "ranking": [answer, other]}).json()["id"]
    ids = {"answer": answer, "other": other, "question": question, "comparison": comparison}

    def fill(value):
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            return ids[value[1:-1]]
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    before = [len(_votes(app, m)) for m in (Rating, Rewrite, Flag)]
    response = getattr(client, method)(path.format(**ids),
                                       json={k: fill(v) for k, v in body.items()})

    assert response.status_code == status, response.text
    assert_error(response.json(), {404: "not_found_error", 422: "invalid_request_error"}[status],
                 code)
    assert [len(_votes(app, m)) for m in (Rating, Rewrite, Flag)] == before


def test_lone_surrogates_are_a_422_never_a_500(app, client) -> None:
    """JSON can escape a lone surrogate ("\\ud800"); no database, tokenizer or UTF-8
    response takes one."""
    _, (answer,) = _answers(client)
    calls = [
        ("put", f"/api/messages/{answer}/rating", {"thumb": 1, "reasons": ["ok\ud800"]}),
        ("put", f"/api/messages/{answer}/rating", {"thumb": 1, "comment": "\udfff"}),
        ("post", f"/api/messages/{answer}/rewrites", {"content": "better \ud800"}),
        ("post", f"/api/messages/{answer}/flags", {"category": "other", "comment": "\ud800"}),
    ]
    for method, path, body in calls:
        response = client.request(method, path, content=json.dumps(body),
                                  headers={"content-type": "application/json"})
        assert response.status_code == 422, (path, response.text)
        assert_error(response.json(), "invalid_request_error", "invalid_request")
    assert [_votes(app, m, message_id=answer) for m in (Rating, Rewrite, Flag)] == [[]] * 3


def test_a_user_votes_only_on_their_own_conversations(app, client) -> None:
    question, (answer, other) = _answers(client, n=2)
    mine = client.post("/api/comparisons",
                       json={"prompt_message_id": question, "ranking": [answer, other]})
    conversation = _votes(app, Message, id=answer)[0].conversation_id
    _, key = add_user(app.state.db)
    stranger = bearer(key)

    attempts = [
        client.put(f"/api/messages/{answer}/rating", json={"thumb": 1}, headers=stranger),
        client.post(f"/api/messages/{answer}/rewrites", json={"content": "mine"},
                    headers=stranger),
        client.post(f"/api/messages/{answer}/flags", json={"category": "privacy"},
                    headers=stranger),
        client.post("/api/comparisons", json={"prompt_message_id": question,
                                              "ranking": [answer, other]}, headers=stranger),
        client.post(f"/api/comparisons/{mine.json()['id']}/verdict", json={"choice": "b"},
                    headers=stranger),
        client.get(f"/api/conversations/{conversation}", headers=stranger),
        client.delete(f"/api/conversations/{conversation}", headers=stranger),
    ]
    for response in attempts:
        assert response.status_code == 404, response.request.url
        assert_error(response.json(), "not_found_error")
    assert _votes(app, Rating, message_id=answer) == []
    assert _votes(app, Rewrite, message_id=answer) == []
    assert _votes(app, Flag, message_id=answer) == []
    assert [c.choice for c in _votes(app, Comparison, prompt_message_id=question)] == [None]
    listed = client.get("/api/conversations", headers=stranger).json()
    assert conversation not in [c["id"] for c in listed]
    assert client.get(f"/api/conversations/{conversation}").status_code == 200


def test_conversations_list_read_and_delete(app, client) -> None:
    with client.websocket_connect("/api/chat") as ws:
        first = ws_turn(ws, "first chat", params={"max_tokens": 2})
        conversation = first.start["conversation_id"]
        ws_turn(ws, "more", conversation_id=conversation, params={"max_tokens": 2})
        latest = ws_turn(ws, "another chat", params={"max_tokens": 2})
    answer = first.end()["message_id"]
    assert client.put(f"/api/messages/{answer}/rating", json={"thumb": 1}).status_code == 200

    listed = client.get("/api/conversations", params={"limit": 2}).json()
    assert [c["id"] for c in listed] == [latest.start["conversation_id"], conversation]
    assert listed[1]["title"] == "first chat"
    detail = client.get(f"/api/conversations/{conversation}").json()
    messages = detail["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert [m["parent_id"] for m in messages] == [None] + [m["id"] for m in messages[:-1]]
    assert messages[1]["finish_reason"] == "length" and messages[1]["completion_tokens"] == 2
    assert messages[1]["content"] == first.text()
    assert client.get("/api/conversations", params={"limit": 0}).status_code == 422

    deleted = client.delete(f"/api/conversations/{conversation}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = client.get(f"/api/conversations/{conversation}")
    assert gone.status_code == 404
    assert_error(gone.json(), "not_found_error", "not_found")
    assert _votes(app, Message, conversation_id=conversation) == []
    assert _votes(app, Rating, message_id=answer) == []
    assert client.get(f"/api/conversations/{latest.start['conversation_id']}").status_code == 200


def test_text_the_database_cannot_store_is_a_422_never_a_500(app, client) -> None:
    """PostgreSQL refuses NUL characters in text, which SQLite stores."""
    _, (answer,) = _answers(client)
    refuses = app.state.db.dialect.name == "postgresql"
    calls = [
        ("post", f"/api/messages/{answer}/rewrites", {"content": "a\x00b"}),
        ("put", f"/api/messages/{answer}/rating", {"thumb": 1, "comment": "nul\x00"}),
        ("post", f"/api/messages/{answer}/flags", {"category": "other", "comment": "\x00"}),
        ("post", "/v1/chat/completions", {"model": "demo", "max_tokens": 1,
                                          "messages": [{"role": "user", "content": "\x00"}]}),
    ]
    for method, path, body in calls:
        response = getattr(client, method)(path, json=body)
        if refuses:
            assert response.status_code == 422, path
            assert_error(response.json(), "invalid_request_error", "unstorable_value")
        else:
            assert response.status_code in (200, 201), path
    with client.websocket_connect("/api/chat") as ws:
        turn = ws_turn(ws, "hi\x00", params={"max_tokens": 1})
        after = ws_turn(ws, "still here", params={"max_tokens": 1})
    if refuses:
        assert (turn.error["code"], turn.of("start")) == ("unstorable_value", [])
    else:
        assert turn.error is None
    assert after.error is None and after.end()["completion_tokens"] == 1
