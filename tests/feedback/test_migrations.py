import subprocess
import sys

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from feedback import models  # noqa: F401  (every table on the metadata)
from feedback.db import alembic_config, current_revision, make_engine, upgrade


def _head(engine) -> str:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def _schema_diffs(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def test_upgrade_runs_once_and_reaches_head(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    upgrade(engine)  # every start runs it: the second time is a no-op

    assert current_revision(engine) == _head(engine) == "0006"
    assert set(inspect(engine).get_table_names()) == tables
    assert tables == set(SQLModel.metadata.tables) | {"alembic_version"}
    engine.dispose()


def test_processes_starting_at_once_on_a_new_database_all_migrate_it(db_url):
    # A gateway and a worker started together on a new PostgreSQL database: all but one
    # failed on a duplicate CREATE before migrations took turns.
    script = "import sys; from feedback.db import open_store; open_store(sys.argv[1])"
    starts = [subprocess.Popen([sys.executable, "-c", script, db_url], stderr=subprocess.PIPE,
                               text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in starts]

    assert [p.returncode for p in starts] == [0] * 4, "\n".join(errors)
    engine = make_engine(db_url)
    assert current_revision(engine) == _head(engine)
    engine.dispose()


def test_the_migrated_schema_is_the_models(engine):
    assert _schema_diffs(engine) == []


def test_downgrade_then_upgrade_round_trips(engine):
    command.downgrade(alembic_config(engine), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert _schema_diffs(engine) == []


def test_0004_keeps_the_registry_and_adds_reward_models(db_url):
    engine = make_engine(db_url)
    command.upgrade(alembic_config(engine), "0003")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO adapter (version, base_model, path, sha256, status, traffic_share, "
            "created_at, updated_at) VALUES ('policy-v1', 'demo', '/a', '', 'live', 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO audit_event (actor, action, adapter_version, detail, "
                          "created_at) VALUES ('ops', 'promote', 'policy-v1', '{}', "
                          "CURRENT_TIMESTAMP)"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version, reward_model_version FROM adapter")).all() \
            == [("policy-v1", None)]
        assert conn.execute(text(
            "SELECT action, reward_model_version FROM audit_event")).all() == [("promote", None)]
        assert conn.execute(text("SELECT count(*) FROM reward_model")).scalar() == 0
    engine.dispose()


def test_0006_keeps_users_and_the_registry_unmarked(db_url):
    engine = make_engine(db_url)
    command.upgrade(alembic_config(engine), "0005")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO \"user\" (handle, role, api_key_hash, created_at) "
                          "VALUES ('alice', 'admin', 'h', CURRENT_TIMESTAMP)"))
        conn.execute(text(
            "INSERT INTO adapter (version, base_model, path, sha256, status, traffic_share, "
            "created_at, updated_at) VALUES ('policy-v1', 'demo', '/a', '', 'live', 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text(
            "SELECT handle, api_key_hash, api_key_expires_at, api_key_revoked_at "
            "FROM \"user\"")).all() == [("alice", "h", None, None)]
        assert conn.execute(text(
            "SELECT version, trained_on_erased_data FROM adapter")).all() \
            == [("policy-v1", False)]
        assert conn.execute(text("SELECT count(*) FROM erasure")).scalar() == 0
    engine.dispose()
