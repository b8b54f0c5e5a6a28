"""Engines, sessions and migrations for the feedback store.

SQLite is the embedded default (WAL, so readers never block the writer; a process's
writers queue for the write lock, `feedback.sqlite_writers`; and a busy timeout, so
writers of several processes wait instead of failing); PostgreSQL is the production
database (`postgresql+psycopg://…`). The schema is owned by Alembic migrations.
"""

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlmodel import Session, create_engine

from feedback.errors import StoreError
from feedback.eventlog import attach_event_log
from feedback.private import FILE_MODE, private_dirs
from feedback.sqlite_writers import connection_class

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def make_engine(url: str, *, pool_size: int = 5,
                wait_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> Engine:
    """An engine for `url`, checked by connecting once (a bad URL fails here, clearly).

    The pool keeps `pool_size` connections and opens as many again in a burst. A caller
    waits up to `wait_s` for a connection (then `sqlalchemy.exc.TimeoutError`) and, on
    SQLite, for the write lock (then "database is locked")."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        hidden = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
        raise StoreError(
            f"not a database URL: {hidden!r} (try sqlite:///path/flywheel.db)") from None
    safe = parsed.render_as_string(hide_password=True)
    if parsed.drivername in ("postgres", "postgresql"):  # would pick psycopg2, or fail
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs = {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": wait_s}
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"check_same_thread": False}
        if not parsed.database or parsed.database == ":memory:":
            kwargs = {}  # one connection per thread: no pool to size
        else:
            try:
                _create_private(Path(parsed.database))
            except OSError as e:
                raise StoreError(f"cannot create {safe}: {e.strerror}") from None
            connect_args["factory"] = connection_class(parsed.database, wait_s)
        kwargs["connect_args"] = connect_args
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as e:
        raise StoreError(f"unsupported database URL {safe!r}: {e}") from None
    if parsed.get_backend_name() == "sqlite":
        busy_ms = int(wait_s * 1000)
        event.listen(engine, "connect", lambda connection, _: _sqlite_pragmas(connection, busy_ms))
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as e:
        reason = str(e.orig if getattr(e, "orig", None) else e).strip().splitlines()[0]
        engine.dispose()
        raise StoreError(f"cannot connect to {safe}: {reason}") from None
    return engine


def _create_private(path: Path) -> None:
    """A new SQLite file is made 0600, in a folder made 0700: it holds every conversation
    (SQLite gives its -wal and -shm files the database file's mode)."""
    private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):  # an existing one keeps its mode
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _sqlite_pragmas(dbapi_connection, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed if the block succeeds, rolled back if it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


# Alembic runs env.py through module-global proxies (`alembic.context`, `alembic.op`), so
# two threads migrating at once (a worker job opening a store beside the server) clash.
_MIGRATION_LOCK = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent; run on every start)."""
    with _MIGRATION_LOCK:
        command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def open_store(url: str, *, event_log: Path | None = None, pool_size: int = 5,
               wait_s: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> Engine:
    """Connect and migrate: what every command and process does on start. With
    `event_log`, every change committed through the engine is appended to that file
    (`feedback.eventlog`). `pool_size` and `wait_s` as for `make_engine`."""
    engine = make_engine(url, pool_size=pool_size, wait_s=wait_s)
    upgrade(engine)
    if event_log is not None:
        attach_event_log(engine, event_log)
    return engine
