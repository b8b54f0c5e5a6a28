"""Shared fixtures: a migrated feedback store on SQLite and on PostgreSQL.

PostgreSQL tests use a throw-away database on the server named by `FLYWHEEL_TEST_PG`
(default: the local server, trust auth). Where that server is unreachable they skip
with the reason; CI always has it (`.ci/run` starts it).
"""

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from feedback.db import open_store
from flywheel.demo_model import demo_model_path, write_demo_model
from tests.fixtures.tiny_models import TINY_KINDS, write_tiny_model

PG_SERVER = os.environ.get("FLYWHEEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HH_DEV = SHARED_DATA / "hh_harmless_dev.jsonl.gz"


@pytest.fixture(scope="session")
def pg_server() -> Engine:
    """An AUTOCOMMIT connection to the PostgreSQL server, to create test databases."""
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except Exception as e:  # noqa: BLE001 — any failure to connect means "unreachable"
        pytest.skip(f"PostgreSQL unreachable at {PG_SERVER}: {str(e).splitlines()[0]}")
    return admin


def _fresh_pg_database(pg_server: Engine) -> Iterator[str]:
    name = f"flywheel_test_{uuid.uuid4().hex[:12]}"
    with pg_server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with pg_server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A URL to an empty database, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'flywheel.db'}"
    else:
        yield from _fresh_pg_database(request.getfixturevalue("pg_server"))


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    """A migrated store, on each database."""
    engine = open_store(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture(scope="session")
def hh_dev() -> Path:
    if not HH_DEV.exists():
        pytest.skip(f"shared data not found at {HH_DEV} (a clone needs ../shared beside it)")
    return HH_DEV


@pytest.fixture(autouse=True)
def _restore_logging():
    """Commands configure the root logger for their process; undo it between tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    for name in ("alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the Hugging Face hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> a saved tiny model directory, for each of TINY_KINDS."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: write_tiny_model(kind, root / kind) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory that already holds the demo model, untaught: random weights
    give every prompt its own gibberish, which shows up answers sent to the wrong stream
    (and building it takes no time). `tests/flywheel/test_demo_model.py` tests the taught one."""
    models_dir = tmp_path_factory.mktemp("models")
    write_demo_model(demo_model_path(models_dir), teaching_steps=0)
    return models_dir
