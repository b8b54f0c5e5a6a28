"""Exporting feedback (dpo, kto, sft, log) and importing it back, on SQLite and PostgreSQL."""

import gzip
import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

import feedback.exporter
from feedback.db import open_store, session_scope
from feedback.exporter import export_feedback
from feedback.formats import read_records
from feedback.importer import import_file
from feedback.queries.conversations import add_message, create_conversation
from feedback.queries.users import create_user
from feedback.queries.votes import (
    add_flag,
    add_rewrite,
    create_comparison,
    record_choice,
    upsert_rating,
)


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    return [json.loads(line) for line in (gzip.decompress(data) if data[:2] == b"\x1f\x8b"
                                          else data).splitlines()]


@pytest.fixture
def new_store(request, db_url, tmp_path):
    """Makes more empty stores on the same database as `engine`."""
    engines, databases = [], []

    def make():
        if db_url.startswith("sqlite"):
            url = f"sqlite:///{tmp_path / f'store{len(engines)}.db'}"
        else:
            name = f"flywheel_test_{uuid.uuid4().hex[:12]}"
            with request.getfixturevalue("pg_server").connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            databases.append(name)
            url = make_url(db_url).set(database=name).render_as_string(hide_password=False)
        engines.append(open_store(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()
    for name in databases:
        with request.getfixturevalue("pg_server").connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def store(engine):
    """Two users' chats, with every kind of vote."""
    with session_scope(engine) as s:
        alice = create_user(s, handle="alice", api_key_hash="f" * 64)
        bob = create_user(s, handle="bob", role="operator")
        chat = create_conversation(s, user_id=alice.id, title="greetings")
        system = add_message(s, conversation_id=chat.id, role="system", content="Be nice.")
        hello = add_message(s, conversation_id=chat.id, role="user", content="Hello?",
                            parent_id=system.id)
        a1, a2, a3 = (add_message(s, conversation_id=chat.id, role="assistant", content=text,
                                  parent_id=hello.id, adapter_version="policy-v1", seed=i,
                                  sampling={"temperature": 0.7}, latency_ms=10.5)
                      for i, text in enumerate(["Hi!", "Go away.", "Hey."]))
        votes = [(alice, [a1, a2], "a"), (bob, [a1, a2], "b"), (alice, [a1, a3], "tie"),
                 (alice, [a2, a3], "both_bad"), (bob, [a1, a2, a3], [a3.id, a1.id, a2.id]),
                 (alice, [a1, a3], None)]
        for user, candidates, verdict in votes:
            comparison = create_comparison(s, user_id=user.id, prompt_message_id=hello.id,
                                           candidate_ids=[m.id for m in candidates])
            if verdict is not None:
                key = "ranking" if isinstance(verdict, list) else "choice"
                record_choice(s, comparison_id=comparison.id, user_id=user.id, **{key: verdict})
        math = create_conversation(s, user_id=bob.id, title="math")
        q1 = add_message(s, conversation_id=math.id, role="user", content="2+2?")
        r1 = add_message(s, conversation_id=math.id, role="assistant", content="4",
                         parent_id=q1.id)
        q2 = add_message(s, conversation_id=math.id, role="user", content="And 3+3?",
                         parent_id=r1.id)
        r2 = add_message(s, conversation_id=math.id, role="assistant", content="6",
                         parent_id=q2.id)
        upsert_rating(s, message_id=a1.id, user_id=alice.id, thumb=1, reasons=["friendly"])
        upsert_rating(s, message_id=a2.id, user_id=bob.id, thumb=-1, comment="rude")
        upsert_rating(s, message_id=r2.id, user_id=bob.id, thumb=1)
        add_rewrite(s, message_id=a2.id, user_id=alice.id, content="Hello! How can I help?")
        add_flag(s, message_id=a2.id, user_id=bob.id, category="harmful")
    return engine


GREETING = [msg("system", "Be nice."), msg("user", "Hello?")]


def pair(chosen: str, rejected: str) -> dict:
    return {"prompt": GREETING, "chosen": [msg("assistant", chosen)],
            "rejected": [msg("assistant", rejected)]}


def test_dpo_has_decided_choices_and_every_pair_of_a_ranking(store, tmp_path):
    out = tmp_path / "dpo.jsonl"
    assert export_feedback(store, fmt="dpo", out=out) == 5
    assert lines(out) == [pair("Hi!", "Go away."), pair("Go away.", "Hi!"),
                          pair("Hey.", "Hi!"), pair("Hey.", "Go away."), pair("Hi!", "Go away.")]


def test_kto_has_one_row_per_rating(store, tmp_path):
    out = tmp_path / "kto.jsonl"
    assert export_feedback(store, fmt="kto", out=out) == 3
    math = [msg("user", "2+2?"), msg("assistant", "4"), msg("user", "And 3+3?")]
    assert lines(out) == [
        {"prompt": GREETING, "completion": [msg("assistant", "Hi!")], "label": True},
        {"prompt": GREETING, "completion": [msg("assistant", "Go away.")], "label": False},
        {"prompt": math, "completion": [msg("assistant", "6")], "label": True}]


def test_sft_has_one_row_per_rewrite(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    assert export_feedback(store, fmt="sft", out=out) == 1
    assert lines(out) == [{"messages": GREETING + [msg("assistant", "Hello! How can I help?")]}]


@pytest.mark.parametrize("fmt", ["dpo", "kto", "sft", "log"])
def test_exports_are_reproducible_and_gzip_on_request(store, tmp_path, fmt):
    plain, again, packed = (tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl.gz"))
    for out in (plain, again, packed):
        export_feedback(store, fmt=fmt, out=out)
    assert gzip.decompress(packed.read_bytes()).count(b"\n") == plain.read_bytes().count(b"\n")
    if fmt == "log":  # the same, but for the header's time
        assert plain.read_bytes().split(b"\n")[1:] == again.read_bytes().split(b"\n")[1:]
        assert lines(packed)[1:] == lines(plain)[1:]
    else:
        assert plain.read_bytes() == again.read_bytes() == gzip.decompress(packed.read_bytes())


def test_the_log_holds_every_record_and_no_secret(store, tmp_path):
    out = tmp_path / "log.jsonl"
    assert export_feedback(store, fmt="log", out=out) == 2 + 2 + 9 + 3 + 6 + 1 + 1
    header, *records = lines(out)
    assert header["format"] == "flywheel-log" and header["version"] == 2
    assert header["source"] == "export" and header["created_at"].endswith("Z")
    kinds = [record["type"] for record in records]
    assert kinds == ["user"] * 2 + ["conversation"] * 2 + ["message"] * 9 + ["rating"] * 3 + [
        "comparison"] * 6 + ["rewrite", "flag"]
    assert all("api_key_hash" not in record and "api_key_last_used_at" not in record
               for record in records)
    assert records[0] == {"type": "user", "id": 1, "handle": "alice", "role": "user",
                          "created_at": records[0]["created_at"], "api_key_expires_at": None,
                          "api_key_revoked_at": None}
    assert records[6]["sampling"] == {"temperature": 0.7} and records[6]["seed"] == 0
    ranked, undecided = records[-4], records[-3]
    assert ranked["ranking"] == [5, 3, 4] and ranked["choice"] is None
    assert undecided["choice"] is None and undecided["ranking"] is None
    assert all(record["created_at"].endswith("Z") for record in records)


def test_log_round_trip(store, new_store, tmp_path):
    first, second = tmp_path / "first.jsonl.gz", tmp_path / "second.jsonl.gz"
    export_feedback(store, fmt="log", out=first)
    fresh = new_store()
    report = import_file(fresh, first)
    assert report.restored == {"user": 2, "conversation": 2, "message": 9, "rating": 3,
                               "comparison": 6, "rewrite": 1, "flag": 1}
    export_feedback(fresh, fmt="log", out=second)
    assert lines(second)[1:] == lines(first)[1:]
    for fmt in ("dpo", "kto"):
        export_feedback(store, fmt=fmt, out=tmp_path / f"a.{fmt}")
        export_feedback(fresh, fmt=fmt, out=tmp_path / f"b.{fmt}")
        assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()


def test_kto_round_trip(engine, new_store, tmp_path):
    source = tmp_path / "labels.jsonl"
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 3 == 0} for i in range(20)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert import_file(engine, source).labels == 20
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert export_feedback(engine, fmt="kto", out=first) == 20
    assert list(read_records(first)) == list(read_records(source))
    fresh = new_store()
    assert import_file(fresh, first).labels == 20
    export_feedback(fresh, fmt="kto", out=second)
    assert first.read_bytes() == second.read_bytes()


def test_a_failed_export_leaves_no_file(store, tmp_path, monkeypatch):
    out = tmp_path / "exports" / "dpo.jsonl"

    def broken(*_args, **_kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(feedback.exporter, "message_paths", broken)
    with pytest.raises(RuntimeError):
        export_feedback(store, fmt="dpo", out=out)
    assert list(out.parent.iterdir()) == []


def test_an_unknown_format_is_refused(engine, tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'csv'"):
        export_feedback(engine, fmt="csv", out=tmp_path / "x.csv")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_datasets_reads_the_exports(store, tmp_path):
    datasets = pytest.importorskip("datasets")
    for fmt, count, columns in (("dpo", 5, ["prompt", "chosen", "rejected"]),
                                ("kto", 3, ["prompt", "completion", "label"]),
                                ("sft", 1, ["messages"])):
        out = tmp_path / f"{fmt}.jsonl.gz"
        export_feedback(store, fmt=fmt, out=out)
        data = datasets.load_dataset("json", data_files=str(out), split="train",
                                     cache_dir=str(tmp_path / "hf"))
        assert data.num_rows == count and data.column_names == columns
        prompt = data[0]["messages"][:-1] if fmt == "sft" else data[0]["prompt"]
        assert prompt[-1] == msg("user", "Hello?")
    assert data[0]["messages"][-1] == msg("assistant", "Hello! How can I help?")


@pytest.mark.slow
def test_hh_round_trip(engine, new_store, hh_dev, tmp_path):
    assert import_file(engine, hh_dev).pairs == 1600
    dpo, log = tmp_path / "hh.dpo.jsonl", tmp_path / "hh.log.jsonl.gz"
    assert export_feedback(engine, fmt="dpo", out=dpo) == 1600
    export_feedback(engine, fmt="log", out=log)
    from_dpo, from_log = new_store(), new_store()
    assert import_file(from_dpo, dpo).pairs == 1600
    assert import_file(from_log, log).pairs == 1600
    for store in (from_dpo, from_log):
        again = tmp_path / "again.jsonl"
        assert export_feedback(store, fmt="dpo", out=again) == 1600
        assert again.read_bytes() == dpo.read_bytes()
    export_feedback(from_log, fmt="log", out=tmp_path / "again.log.jsonl.gz")
    assert lines(tmp_path / "again.log.jsonl.gz")[1:] == lines(log)[1:]
