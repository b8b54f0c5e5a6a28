"""Alembic environment: runs against the engine that `feedback.db.upgrade` hands over."""

from alembic import context
from sqlmodel import SQLModel

from feedback import models  # noqa: F401  (registers every table on the metadata)

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    engine = context.config.attributes["engine"]
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
