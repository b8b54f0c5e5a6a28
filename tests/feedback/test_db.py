import stat
import threading
from datetime import UTC

import pytest
from sqlalchemy import text
from sqlmodel import Session

from feedback.db import SQLITE_BUSY_TIMEOUT_MS, make_engine, open_store, session_scope
from feedback.errors import StoreError
from feedback.models import Message, User
from feedback.queries import conversations, users, votes


def _store_error(url: str) -> str:
    with pytest.raises(StoreError) as caught:
        make_engine(url)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "secret" not in message
    return message


@pytest.mark.parametrize("url", ["not a url", "", "postgresql://me:secret@db:port/flywheel"])
def test_a_malformed_url_is_one_clear_line(url):
    assert _store_error(url).startswith("not a database URL")


@pytest.mark.parametrize("url", ["nosuchdb://me:secret@db/x",
                                 "postgresql+nodriver://me:secret@db/x"])
def test_an_unknown_driver_is_one_clear_line(url):
    message = _store_error(url)
    assert message.startswith("unsupported database URL") and "Can't load plugin" in message


def test_an_unreachable_server_is_one_clear_line_without_the_password():
    message = _store_error("postgresql://me:secret@127.0.0.1:1/flywheel")
    assert message.startswith("cannot connect to postgresql://me:***@127.0.0.1:1/flywheel: ")


def test_the_sqlite_store_and_its_wal_files_are_private(tmp_path):
    """Every conversation is in them: 0600 files in a 0700 folder it made."""
    path = tmp_path / "data" / "flywheel.db"
    engine = open_store(f"sqlite:///{path}")
    with session_scope(engine) as session:
        users.create_user(session, handle="alice")
        created = [p.name for p in path.parent.iterdir()]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
    engine.dispose()
    assert {"flywheel.db", "flywheel.db-wal", "flywheel.db-shm"} <= set(created)
    assert set(modes.values()) == {0o600}, modes
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_unusable_sqlite_path_is_one_clear_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    assert _store_error(f"sqlite:///{tmp_path}/a-file/x.db").startswith("cannot create")
    assert _store_error(f"sqlite:///{tmp_path}").startswith("cannot connect to sqlite:")


def test_postgresql_urls_use_psycopg(pg_server):
    url = pg_server.url.set(drivername="postgresql").render_as_string(hide_password=False)
    engine = make_engine(url)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_sqlite_pragmas_are_applied_to_every_connection(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/deep/er/flywheel.db")
    for _ in range(2):
        with engine.connect() as conn:
            pragmas = [conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                       for name in ("journal_mode", "busy_timeout", "foreign_keys")]
        assert pragmas == ["wal", SQLITE_BUSY_TIMEOUT_MS, 1]
        engine.dispose()  # the next connection is a new one


def test_session_scope_commits_or_rolls_back(engine):
    with session_scope(engine) as session:
        users.create_user(session, handle="kept")
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        users.create_user(session, handle="dropped")
        raise RuntimeError("boom")

    with session_scope(engine) as session:
        assert [u.handle for u in users.list_users(session)] == ["kept"]


def test_timestamps_read_back_in_utc_and_json_none_is_sql_null(engine):
    with session_scope(engine) as session:
        user = users.create_user(session, handle="u")
        conversation = conversations.create_conversation(session, user_id=user.id)
        message = conversations.add_message(session, conversation_id=conversation.id,
                                            role="user", content="hi")
    with Session(engine) as session:
        stored = session.get(User, user.id).created_at
        assert stored.tzinfo is UTC and stored == user.created_at
        assert session.get(Message, message.id).sampling is None
        null = text("SELECT COUNT(*) FROM message WHERE sampling IS NULL")
        assert session.exec(null).one()[0] == 1


def test_concurrent_sqlite_writers_wait_for_each_other(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path}/busy.db")
    with session_scope(engine) as session:
        conversation = conversations.create_conversation(
            session, user_id=users.create_user(session, handle="owner").id)
        prompt = conversations.add_message(session, conversation_id=conversation.id,
                                           role="user", content="?")
        answers = [conversations.add_message(session, conversation_id=conversation.id,
                                             role="assistant", content=str(i),
                                             parent_id=prompt.id).id for i in range(50)]
    errors: list[BaseException] = []

    def rate_everything(n: int) -> None:
        try:
            with session_scope(engine) as session:
                user_id = users.create_user(session, handle=f"rater-{n}").id
            for message_id in answers:  # one transaction per vote, as the server does
                with session_scope(engine) as session:
                    votes.upsert_rating(session, message_id=message_id, user_id=user_id,
                                        thumb=1 if n % 2 else -1)
        except BaseException as e:  # noqa: BLE001 — reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=rate_everything, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with session_scope(engine) as session:
        assert len(list(votes.iter_ratings(session))) == 4 * 50
    engine.dispose()


def test_stores_opened_by_several_threads_at_once_all_migrate(tmp_path):
    """Alembic's env.py runs through module-global proxies: without a lock, two threads
    migrating at once fail with KeyError('script')."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one(i: int) -> None:
        barrier.wait()
        try:
            open_store(f"sqlite:///{tmp_path / f'store-{i}.db'}").dispose()
        except BaseException as error:  # noqa: BLE001 — collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
