"""The websocket chat protocol (see the docstring of server/routes/chat_ws.py)."""

import json

import pytest
from sqlmodel import select

from feedback.models import Comparison, Message
from tests.server.support import (
    add_user,
    bearer,
    chat_ids,
    db_session,
    finish_turn,
    greedy_reference,
    user_turn,
    wait_until,
    ws_turn,
)

GREEDY = {"temperature": 0, "max_tokens": 8}


@pytest.fixture
def ws(client):
    with client.websocket_connect("/api/chat") as ws:
        yield ws


def _message(app, message_id: int) -> Message:
    with db_session(app) as session:
        return session.get(Message, message_id)


def test_a_turn_streams_tokens_and_announces_message_ids(app, demo, ws) -> None:
    turn = ws_turn(ws, "hello there", params=GREEDY)

    start, end, done = turn.start, turn.end(), turn.done
    assert [f["type"] for f in turn.frames] == (
        ["start"] + ["token"] * len(turn.of("token")) + ["end", "done"])
    assert start["answers"] == ["a"] and start["side_by_side"] is False
    assert all(f["answer"] == "a" and f["text"] for f in turn.of("token"))
    assert turn.text() == greedy_reference(demo, "hello there", 8)
    assert end["finish_reason"] == "length" and end["completion_tokens"] == 8
    assert end["prompt_tokens"] == len(chat_ids(demo.tokenizer, [
        {"role": "user", "content": "hello there"}]))
    assert end["adapter_version"] is None
    assert done == {"type": "done", "comparison_id": None}
    # Both messages are stored; the answer as streamed, after the user's turn.
    question, answer = _message(app, start["message_id"]), _message(app, end["message_id"])
    assert (question.role, question.content, question.parent_id) == ("user", "hello there", None)
    assert question.conversation_id == answer.conversation_id == start["conversation_id"]
    assert (answer.role, answer.content, answer.parent_id) == (
        "assistant", turn.text(), question.id)
    assert answer.finish_reason == "length" and answer.completion_tokens == 8
    assert answer.sampling["temperature"] == 0 and answer.latency_ms > 0


def test_a_conversation_continues_from_its_last_answer_or_a_chosen_parent(app, demo,
                                                                          ws) -> None:
    first = ws_turn(ws, "hi", params=GREEDY)
    conversation = first.start["conversation_id"]
    second = ws_turn(ws, "and then?", conversation_id=conversation, params=GREEDY)

    thread = [{"role": "user", "content": "hi"},
              {"role": "assistant", "content": first.text()},
              {"role": "user", "content": "and then?"}]
    assert second.start["conversation_id"] == conversation
    assert _message(app, second.start["message_id"]).parent_id == first.end()["message_id"]
    assert second.end()["prompt_tokens"] == len(chat_ids(demo.tokenizer, thread))
    assert second.text() == greedy_reference(demo, thread, 8)

    # A branch: answer the first exchange again, differently.
    branch = ws_turn(ws, "something else", conversation_id=conversation,
                     parent_id=first.end()["message_id"], params=GREEDY)
    branch_thread = [*thread[:2], {"role": "user", "content": "something else"}]
    assert _message(app, branch.start["message_id"]).parent_id == first.end()["message_id"]
    assert branch.text() == greedy_reference(demo, branch_thread, 8)


def test_stop_ends_the_answer_and_keeps_what_was_streamed(app, ws) -> None:
    ws.send_json(user_turn("tell me everything", params={"temperature": 0, "max_tokens": 300}))
    assert ws.receive_json()["type"] == "start"
    first = ws.receive_json()
    ws.send_json({"type": "stop"})
    turn = finish_turn(ws.receive_json)

    end = turn.end()
    assert end["finish_reason"] == "stop"
    assert 0 < end["completion_tokens"] < 300
    assert _message(app, end["message_id"]).content == first["text"] + turn.text()
    assert turn.done["type"] == "done"
    wait_until(lambda: app.state.chat.engine.active == 0, what="the stopped answer to leave")
    assert ws_turn(ws, "next", params=GREEDY).end()["finish_reason"] == "length"


def test_malformed_frames_get_an_error_and_the_socket_stays_open(ws) -> None:
    frames = [
        "not json",
        "[1, 2]",
        '"text"',
        '{"type": "nope"}',
        '{"no_type": 1}',
        '{"type": "user_turn"}',
        '{"type": "user_turn", "content": ""}',
        '{"type": "user_turn", "content": "hi", "params": {"temperature": 3}}',
        '{"type": "user_turn", "content": "hi", "params": {"stop": ["a","b","c","d","e"]}}',
        f'{{"type": "user_turn", "content": "hi", "params": {{"stop": ["{"x" * 101}"]}}}}',
        # Lone surrogates, which JSON can escape and nothing downstream takes.
        '{"type": "user_turn", "content": "lone \\ud800"}',
        '{"type": "user_turn", "content": "hi", "params": {"stop": ["\\udfff"]}}',
        '{"type": "user_turn", "content": "hi", "model": "demo\\ud800"}',
        '{"type": "\\ud800"}',
        '{"type": "user_turn", "content": "hi", "conversation_id": "first"}',
        f'{{"type": "user_turn", "content": "hi", "conversation_id": {2**64}}}',
        '{"type": "pick", "comparison_id": 1, "choice": "c"}',
        '{"type": "pick", "choice": "a"}',
    ]
    for raw in frames:
        ws.send_text(raw)
        frame = ws.receive_json()
        assert frame["type"] == "error", raw
        assert frame["error"]["type"] == "invalid_request_error", raw
        assert frame["error"]["code"] == "invalid_frame", raw
    assert ws_turn(ws, "still there?", params=GREEDY).done["type"] == "done"


@pytest.mark.parametrize("params", [
    {"stop": [""]},  # SamplingParams refuses it after the frame was accepted
    {"seed": 2**64},
    {"seed": -(2**70)},
    {"max_tokens": 513},  # beyond the demo model's window
    {"max_tokens": 10**30},
])
def test_sampling_parameters_the_sampler_refuses_are_a_422_not_a_dead_turn(ws,
                                                                          params) -> None:
    turn = ws_turn(ws, "hi", params={"max_tokens": 2, **params})
    assert turn.error["type"] == "invalid_request_error"
    assert turn.error["code"] == "invalid_request"
    assert turn.of("start") == []
    assert ws_turn(ws, "again", params=GREEDY).end()["completion_tokens"] == 8


def test_unknown_and_foreign_ids_are_not_found(app, client, ws) -> None:
    _, key = add_user(app.state.db)
    with client.websocket_connect("/api/chat", headers=bearer(key)) as other:
        theirs = ws_turn(other, "my secret", params=GREEDY, side_by_side=True)
    mine = ws_turn(ws, "mine", params=GREEDY)

    cases = [
        ({"conversation_id": 10**9}, 404, "not_found"),
        ({"conversation_id": theirs.start["conversation_id"]}, 404, "not_found"),
        ({"parent_id": mine.end()["message_id"]}, 422, None),  # parent without conversation
        ({"conversation_id": mine.start["conversation_id"],  # a parent from elsewhere
          "parent_id": theirs.end()["message_id"]}, 422, "invalid_feedback"),
        ({"model": "gpt-17"}, 404, "model_not_found"),
    ]
    for fields, status, code in cases:
        error = ws_turn(ws, "hi", params=GREEDY, **fields).error
        assert error is not None, fields
        assert error["type"] == {404: "not_found_error", 422: "invalid_request_error"}[status]
        if code:
            assert error["code"] == code, fields

    for comparison_id in (10**9, theirs.done["comparison_id"]):
        ws.send_json({"type": "pick", "comparison_id": comparison_id, "choice": "a"})
        frame = ws.receive_json()
        assert frame["type"] == "error"
        assert frame["error"]["type"] == "not_found_error"
        assert frame["error"]["code"] == "not_found"
    with db_session(app) as session:  # their comparison is untouched
        assert session.get(Comparison, theirs.done["comparison_id"]).choice is None


def test_a_second_turn_while_one_streams_is_refused_and_the_first_completes(ws) -> None:
    ws.send_json(user_turn("first", params={"temperature": 0, "max_tokens": 40}))
    ws.send_json(user_turn("second", params=GREEDY))
    frames = []
    while not frames or frames[-1]["type"] != "done":
        frames.append(ws.receive_json())

    errors = [f["error"] for f in frames if f["type"] == "error"]
    assert [(e["code"], e["type"]) for e in errors] == [("busy", "conflict_error")]
    starts = [f for f in frames if f["type"] == "start"]
    assert len(starts) == 1 and starts[0]["answers"] == ["a"]
    assert [f["completion_tokens"] for f in frames if f["type"] == "end"] == [40]


def test_side_by_side_two_anonymous_answers_then_the_pick_continues(app, ws) -> None:
    params = {"temperature": 0.9, "max_tokens": 8, "seed": 5}
    turn = ws_turn(ws, "compare these", side_by_side=True, params=params)

    assert turn.start["answers"] == ["a", "b"] and turn.start["side_by_side"] is True
    assert {f["answer"] for f in turn.of("token")} == {"a", "b"}
    a, b = turn.end("a"), turn.end("b")
    assert a["adapter_version"] is None and b["adapter_version"] is None
    assert turn.text("a") != turn.text("b")  # two samples, seeds 5 and 6
    comparison_id = turn.done["comparison_id"]
    with db_session(app) as session:
        stored = session.get(Comparison, comparison_id)
        assert stored.candidate_ids == [a["message_id"], b["message_id"]]
        assert stored.prompt_message_id == turn.start["message_id"]
        assert session.get(Message, b["message_id"]).content == turn.text("b")
        assert session.get(Message, a["message_id"]).seed in (5, 6)

    votes = app.state.metrics.votes.labels("comparison")
    counted = votes._value.get()
    ws.send_json({"type": "pick", "comparison_id": comparison_id, "choice": "b"})
    picked = ws.receive_json()
    assert votes._value.get() == counted + 1  # as the REST verdict counts
    assert picked == {"type": "picked", "comparison_id": comparison_id, "choice": "b",
                      "continue_from": b["message_id"], "models": {"a": "base", "b": "base"}}

    after = ws_turn(ws, "go on", conversation_id=turn.start["conversation_id"],
                    params={"temperature": 0, "max_tokens": 2})
    assert _message(app, after.start["message_id"]).parent_id == b["message_id"]

    # Picking again updates the verdict; there is still one comparison for the prompt.
    ws.send_json({"type": "pick", "comparison_id": comparison_id, "choice": "tie"})
    assert ws.receive_json()["continue_from"] == a["message_id"]
    with db_session(app) as session:
        rows = session.exec(select(Comparison).where(
            Comparison.prompt_message_id == turn.start["message_id"])).all()
        assert [(c.id, c.choice) for c in rows] == [(comparison_id, "tie")]


def test_the_server_decides_side_by_side_by_its_share(app, ws) -> None:
    settings = app.state.settings
    settings.side_by_side_share = 1.0
    try:
        always = ws_turn(ws, "one", params={"max_tokens": 2})
        forced_off = ws_turn(ws, "two", side_by_side=False, params={"max_tokens": 2})
    finally:
        settings.side_by_side_share = 0.0
    never = ws_turn(ws, "three", params={"max_tokens": 2})
    assert always.start["answers"] == ["a", "b"] and always.done["comparison_id"]
    assert forced_off.start["answers"] == ["a"] and forced_off.done["comparison_id"] is None
    assert never.start["answers"] == ["a"]


def test_closing_the_socket_mid_answer_frees_the_engine(app, client) -> None:
    engine = app.state.chat.engine
    before = engine.tokens_generated
    with client.websocket_connect("/api/chat") as ws:
        ws.send_json(user_turn("a long story", params={"temperature": 0, "max_tokens": 400}))
        assert ws.receive_json()["type"] == "start"
        assert ws.receive_json()["type"] == "token"
    wait_until(lambda: engine.active == 0, what="the abandoned answer to leave the batch")
    assert engine.tokens_generated - before < 400
    with client.websocket_connect("/api/chat") as ws:  # and the server goes on serving
        assert ws_turn(ws, "hello", params=GREEDY).end()["completion_tokens"] == 8


def test_a_binary_frame_gets_an_error_then_a_close_for_unsupported_data(client) -> None:
    with client.websocket_connect("/api/chat") as ws:
        ws.send_bytes(b'{"type": "stop"}')
        frame = ws.receive_json()
        assert (frame["type"], frame["error"]["code"]) == ("error", "binary_frame")
        assert frame["error"]["type"] == "invalid_request_error"
        assert ws.receive() == {"type": "websocket.close", "code": 1003,
                                "reason": "binary frames are not supported"}


def test_every_error_frame_has_the_http_error_shape(ws) -> None:
    ws.send_text(json.dumps({"type": "user_turn", "content": "x", "model": "nope"}))
    frame = ws.receive_json()
    assert set(frame) == {"type", "error"}
    assert set(frame["error"]) == {"message", "type", "code"}


def test_after_a_pick_a_new_connection_continues_from_the_picked_answer(app, client) -> None:
    params = {"temperature": 0.9, "max_tokens": 4, "seed": 11}
    _, key = add_user(app.state.db)
    with client.websocket_connect("/api/chat", headers=bearer(key)) as first:
        turn = ws_turn(first, "pick one", side_by_side=True, params=params)
        first.send_json({"type": "pick", "comparison_id": turn.done["comparison_id"],
                         "choice": "b"})
        assert first.receive_json()["type"] == "picked"
    with client.websocket_connect("/api/chat", headers=bearer(key)) as second:
        after = ws_turn(second, "and then?", conversation_id=turn.start["conversation_id"],
                        params={"temperature": 0, "max_tokens": 2})
    assert _message(app, after.start["message_id"]).parent_id == turn.end("b")["message_id"]


def test_a_turn_beyond_the_window_is_refused_and_not_stored(app, ws) -> None:
    first = ws_turn(ws, "short question", params=GREEDY)
    conversation_id = first.start["conversation_id"]
    ws.send_json(user_turn("word " * 1500, conversation_id=conversation_id, params=GREEDY))
    refused = ws.receive_json()
    assert refused["type"] == "error" and refused["error"]["code"] == "context_length_exceeded"
    with db_session(app) as session:
        stored = session.exec(select(Message).where(
            Message.conversation_id == conversation_id)).all()
    assert [m.content for m in stored] == ["short question", first.text()]
