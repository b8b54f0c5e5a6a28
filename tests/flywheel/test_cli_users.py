"""`flywheel users`: keys created with an expiry, listed, rotated and revoked; a user erased
from the store and the event log of a data directory, with what trained on their data
marked in `adapters list` and `reward-models show`."""

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from feedback.db import open_store, session_scope
from feedback.models import User, utcnow
from feedback.queries import adapters as registry
from feedback.queries import conversations as convs
from feedback.queries import reward_models as rm_registry
from feedback.queries.users import get_user_by_handle
from flywheel.api_keys import hash_api_key
from flywheel.cli.users import expiry
from flywheel.errors import FlywheelError
from tests.flywheel.test_cli import flywheel_cli, ok, one_error


def _user(db_url: str, handle: str) -> User | None:
    engine = open_store(db_url)
    try:
        with Session(engine) as session:
            return session.exec(select(User).where(User.handle == handle)).first()
    finally:
        engine.dispose()


def test_keys_expire_rotate_and_are_revoked(db_url: str) -> None:
    created = ok(flywheel_cli("users", "create", "ann", "--expires-in", "30d", "--db", db_url))
    first_key = created.splitlines()[1]
    user = _user(db_url, "ann")
    assert timedelta(days=29) < user.api_key_expires_at - utcnow() <= timedelta(days=30)

    rotated = ok(flywheel_cli("users", "rotate-key", "ann", "--db", db_url))
    new_key = rotated.splitlines()[1]
    user = _user(db_url, "ann")
    assert new_key != first_key and user.api_key_hash == hash_api_key(new_key)
    assert user.api_key_expires_at is None  # the new key's own expiry: none given

    assert "revoked the API key of ann" in ok(flywheel_cli("users", "revoke", "ann",
                                                           "--db", db_url))
    user = _user(db_url, "ann")
    assert user.api_key_hash is None and user.api_key_revoked_at is not None
    listed = ok(flywheel_cli("users", "list", "--db", db_url))
    assert "ann" in listed and "revoked" in listed
    one_error(flywheel_cli("users", "revoke", "ann", "--db", db_url), "no API key")
    one_error(flywheel_cli("users", "revoke", "nobody", "--db", db_url), "not found")


@pytest.mark.parametrize("bad", ["0d", "ten days", "5y", "-1h", ""])
def test_a_bad_expiry_is_refused(bad: str) -> None:
    with pytest.raises(FlywheelError, match="--expires-in"):
        expiry(bad)


def test_expiry_units() -> None:
    assert timedelta(minutes=89) < expiry("90m") - utcnow() <= timedelta(minutes=90)
    assert timedelta(weeks=2) - (expiry("2w") - utcnow()) < timedelta(seconds=5)
    assert expiry(None) is None


def test_users_erase_leaves_nothing_they_typed_in_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    secret = f"ibis-{uuid.uuid4().hex}"
    engine = open_store(f"sqlite:///{data_dir / 'flywheel.db'}",
                        event_log=data_dir / "events.jsonl")
    with session_scope(engine) as session:
        ok(flywheel_cli("users", "create", "dora", "--data-dir", data_dir))
        dora = get_user_by_handle(session, handle="dora").id
        conversation = convs.create_conversation(session, user_id=dora, title="hi")
        convs.add_message(session, conversation_id=conversation.id, role="user",
                          content=f"remember {secret}")
    with session_scope(engine) as session:
        rm_registry.register_reward_model(session, version="rm-0001", path="/rm",
                                          backbone="minilm", actor="scheduler")
        registry.register_adapter(session, version="policy-v1", base_model="demo",
                                  path="/a", sha256="0" * 64, reward_model_version="rm-0001")
    engine.dispose()
    assert secret.encode() in (data_dir / "events.jsonl").read_bytes()

    out = ok(flywheel_cli("users", "erase", "dora", "--yes", "--data-dir", data_dir))

    assert "removed 1 message, 1 conversation, 1 user" in out and "rm-0001, policy-v1" in out
    needle = secret.encode()
    assert [p for p in data_dir.rglob("*") if p.is_file() and needle in p.read_bytes()] == []
    assert "trained on erased data" in ok(flywheel_cli("adapters", "list",
                                                       "--data-dir", data_dir))
    shown = ok(flywheel_cli("reward-models", "show", "rm-0001", "--data-dir", data_dir))
    assert "trained on erased data" in shown and "trained_on_erased_data by cli:" in shown
    one_error(flywheel_cli("users", "erase", "dora", "--yes", "--data-dir", data_dir),
              "not found")


def test_users_erase_asks_first(tmp_path: Path) -> None:
    ok(flywheel_cli("users", "create", "eve", "--data-dir", tmp_path))
    result = flywheel_cli("users", "erase", "eve", "--data-dir", tmp_path)  # answers no
    assert result.exit_code == 1 and "erase eve" in result.output
    assert _user(f"sqlite:///{tmp_path / 'flywheel.db'}", "eve") is not None


def test_a_careless_user_is_left_out_of_training(db_url: str) -> None:
    from feedback.queries import exclusions

    ok(flywheel_cli("users", "create", "clicky", "--db", db_url))
    ok(flywheel_cli("users", "create", "careful", "--db", db_url))
    said = ok(flywheel_cli("users", "exclude", "clicky", "--actor", "ops", "--db", db_url))
    assert "every vote of clicky is left out of training" in said
    clicky, careful = _user(db_url, "clicky"), _user(db_url, "careful")
    engine = open_store(db_url)
    try:
        with session_scope(engine) as session:
            assert exclusions.training_filter(session).users == {clicky.id}
    finally:
        engine.dispose()
    assert careful.id != clicky.id
    one_error(flywheel_cli("users", "exclude", "clicky", "--db", db_url), "already left out")
    one_error(flywheel_cli("users", "exclude", "nobody", "--db", db_url), "not found")
