"""The live event log: written as changes commit — by a server's chat turns and votes, by
the CLI's adapter transitions, by imports — never by a rolled-back transaction, and whole
lines only when several processes append at once."""

import json
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from feedback.db import open_store, session_scope
from feedback.eventlog import EventLog
from feedback.exporter import export_feedback
from feedback.importer import import_file
from feedback.queries import adapters as registry
from feedback.queries.users import create_user, iter_users
from feedback.queries.votes import upsert_rating
from feedback.replay import replay_log
from flywheel.adapter_store import AdapterStore
from flywheel.cli import app
from server.app import create_app
from tests.fixtures.tiny_models import save_tiny_adapter
from tests.server.support import add_user, bearer, load_demo, make_settings

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def read(path: Path) -> tuple[dict, list[dict]]:
    header, *records = [json.loads(line) for line in path.read_text().splitlines()]
    return header, records


def test_a_live_server_logs_turns_and_votes_as_they_happen(models_dir, tmp_path):
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings, model=load_demo(models_dir))) as client:
        _, key = add_user(client.app.state.db, handle="alice")
        answer = client.post("/v1/chat/completions", headers=bearer(key), json={
            "model": "demo", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 2, "n": 2, "seed": 1}).json()
        first, second = (c["message_id"] for c in answer["choices"])
        for thumb in (1, -1):
            assert client.put(f"/api/messages/{first}/rating", headers=bearer(key),
                              json={"thumb": thumb}).status_code == 200
        header, records = read(settings.event_log_path)  # before anything else happens
        assert header["format"] == "flywheel-log" and header["source"] == "events"
        assert [r["thumb"] for r in records if r["type"] == "rating"] == [1, -1]
        assert client.post(f"/api/messages/{second}/flags", headers=bearer(key),
                           json={"category": "harmful"}).status_code in (200, 201)
    _, records = read(settings.event_log_path)
    kinds = {r["type"] for r in records}
    assert {"user", "conversation", "message", "rating", "flag"} <= kinds
    assert all("api_key_hash" not in r for r in records)
    answers = [r for r in records if r["type"] == "message" and r["role"] == "assistant"]
    assert {r["id"] for r in answers} == {first, second} and answers[0]["seed"] is not None
    rebuilt = open_store(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    replay_log(rebuilt, settings.event_log_path)
    source = open_store(settings.db_url)
    for engine, out in ((source, "a.log"), (rebuilt, "b.log")):
        export_feedback(engine, fmt="log", out=tmp_path / out)
        engine.dispose()
    assert read(tmp_path / "a.log")[1] == read(tmp_path / "b.log")[1]


def test_adapter_transitions_from_the_command_line_are_logged(tmp_path):
    events = tmp_path / "events.jsonl"
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", event_log=events)
    stored = save_tiny_adapter(AdapterStore(tmp_path / "adapters"), "policy-v1")
    with session_scope(engine) as session:
        registry.register_adapter(session, version="policy-v1", base_model="tiny",
                                  path=str(stored.path), sha256=stored.sha256,
                                  status="candidate")
    for action in ("approve", "promote"):
        result = runner.invoke(app, ["adapters", action, "policy-v1", "--data-dir",
                                     str(tmp_path), "--actor", "alice"])
        assert result.exit_code == 0, result.output
    _, records = read(events)
    assert [r["status"] for r in records if r["type"] == "adapter"] == [
        "candidate", "approved", "live"]
    assert [(r["action"], r["actor"]) for r in records if r["type"] == "audit_event"] == [
        ("approve", "alice"), ("promote", "alice")]


def test_the_event_log_is_private(tmp_path):
    """It holds every conversation: its owner's alone, in a folder of its own if it made one."""
    events = tmp_path / "data" / "events.jsonl"
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", event_log=events)
    with session_scope(engine) as session:
        create_user(session, handle="alice")
    assert stat.S_IMODE(events.stat().st_mode) == 0o600
    assert stat.S_IMODE(events.parent.stat().st_mode) == 0o700


def test_a_rolled_back_transaction_writes_nothing(tmp_path):
    events = tmp_path / "events.jsonl"
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", event_log=events)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        create_user(session, handle="ghost")
        raise RuntimeError("the request failed after its flush")
    assert not events.exists()
    with session_scope(engine) as session:
        create_user(session, handle="kept")
        with pytest.raises(RuntimeError), session.begin_nested():
            create_user(session, handle="savepoint")
            raise RuntimeError
    _, records = read(events)
    assert [r["handle"] for r in records] == ["kept"]


def test_an_import_is_logged_with_the_ids_it_got(tmp_path):
    events = tmp_path / "events.jsonl"
    engine = open_store(f"sqlite:///{tmp_path / 'flywheel.db'}", event_log=events)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    import_file(engine, data)
    with session_scope(engine) as session:
        (user,) = iter_users(session)
        upsert_rating(session, message_id=3, user_id=user.id, thumb=1)
    _, records = read(events)
    assert [(r["type"], r["id"]) for r in records] == [
        ("user", 1), ("conversation", 1), ("message", 1), ("message", 2), ("message", 3),
        ("comparison", 1), ("rating", 1)]


APPENDER = """
import sys
from feedback.db import open_store, session_scope
from feedback.queries.users import create_user
engine = open_store(sys.argv[1], event_log=sys.argv[2])
for n in range(40):
    with session_scope(engine) as session:
        create_user(session, handle=f"{sys.argv[3]}-{n}")
"""


@pytest.mark.slow
def test_processes_appending_at_once_write_whole_lines(tmp_path):
    url, events = f"sqlite:///{tmp_path / 'flywheel.db'}", tmp_path / "events.jsonl"
    open_store(url).dispose()
    workers = [subprocess.Popen([sys.executable, "-c", APPENDER, url, str(events), f"p{i}"],
                                cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
               for i in range(4)]
    assert [worker.wait(timeout=240) for worker in workers] == [0] * 4
    header, records = read(events)  # every line parses; one header
    assert header["format"] == "flywheel-log" and len(records) == 160
    assert sorted(r["id"] for r in records) == list(range(1, 161))


def test_a_rewrite_is_atomic_and_appends_waiting_for_it_go_to_the_new_file(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.append([{"type": "note", "id": i} for i in range(3)])
    appended = threading.Event()

    def keep_odd(records):
        kept = [r for r in records() if r["id"] % 2]  # a first pass, then the edit
        writer = threading.Thread(target=lambda: (log.append([{"type": "note", "id": 9}]),
                                                  appended.set()))
        writer.start()
        assert not appended.wait(0.3)  # the append waits for the rewrite
        yield from kept

    report = log.rewrite(keep_odd)

    assert appended.wait(10)
    header, records = read(log.path)
    assert header["format"] == "flywheel-log" and records == [{"type": "note", "id": 1},
                                                               {"type": "note", "id": 9}]
    assert (report.read, report.written) == (3, 1)
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]  # no temporary left


def test_a_failed_rewrite_leaves_the_log_as_it_was(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    log.append([{"type": "note", "id": 1}])
    before = log.path.read_bytes()

    def broken(records):
        yield from records()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        log.rewrite(broken)
    assert log.path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]
    assert EventLog(tmp_path / "none.jsonl").rewrite(broken).written == 0
