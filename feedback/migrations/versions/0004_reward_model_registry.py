"""reward model registry

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:30:12.118204

Reward models join adapters in the registry (they were a `CURRENT` file in the data
directory, which a migration cannot see: the trainer imports such models on first use).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reward_model',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('parent_version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
    sa.Column('backbone', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('data_window', sa.JSON(), nullable=False),
    sa.Column('heldout', sa.JSON(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reward_model', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reward_model_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_reward_model_version'), ['version'], unique=True)
        batch_op.create_index('ix_reward_model_one_current', ['status'], unique=True,
                              sqlite_where=sa.text("status = 'current'"),
                              postgresql_where=sa.text("status = 'current'"))

    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reward_model_version',
                                      sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))

    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reward_model_version',
                                      sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_audit_event_reward_model_version'),
                              ['reward_model_version'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_event_reward_model_version'))
        batch_op.drop_column('reward_model_version')

    with op.batch_alter_table('adapter', schema=None) as batch_op:
        batch_op.drop_column('reward_model_version')

    with op.batch_alter_table('reward_model', schema=None) as batch_op:
        batch_op.drop_index('ix_reward_model_one_current',
                            sqlite_where=sa.text("status = 'current'"),
                            postgresql_where=sa.text("status = 'current'"))
        batch_op.drop_index(batch_op.f('ix_reward_model_version'))
        batch_op.drop_index(batch_op.f('ix_reward_model_status'))

    op.drop_table('reward_model')
