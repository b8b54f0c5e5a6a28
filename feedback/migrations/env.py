"""Alembic environment: runs against the engine that `feedback.db.upgrade` hands over."""

from alembic import context
from sqlmodel import SQLModel

from feedback import models  # noqa: F401  (registers every table on the metadata)

target_metadata = SQLModel.metadata

# Processes that start at once on a new database (a gateway and a worker) would each
# create the tables, and all but one fail on a duplicate. They migrate in turn instead, each
# next one finding the schema at head: on PostgreSQL under a transaction-level advisory
# lock; on SQLite in one transaction that takes the write lock first (Python's sqlite3
# would otherwise run each CREATE on its own, outside any transaction).
POSTGRES_MIGRATION_LOCK = 0x666C7977  # "flyw"


def run_migrations() -> None:
    engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POSTGRES_MIGRATION_LOCK})")
        elif connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
