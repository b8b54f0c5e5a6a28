"""users, keys and erasure

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 23:40:00.000000

API keys get an expiry, a last-used time and a revocation time; a record of each erasure
(`erasure`: who erased and how many rows, nothing about the user); adapters and reward
models get a mark for having been trained on data that was erased since.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY_TIMES = ('api_key_expires_at', 'api_key_last_used_at', 'api_key_revoked_at')
MARKED = ('adapter', 'reward_model')


def upgrade() -> None:
    op.create_table('erasure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('rows', sa.JSON(), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('user', schema=None) as batch_op:
        for name in KEY_TIMES:
            batch_op.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    for table in MARKED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('trained_on_erased_data', sa.Boolean(),
                                          server_default=sa.text('false'), nullable=False))


def downgrade() -> None:
    for table in MARKED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('trained_on_erased_data')
    with op.batch_alter_table('user', schema=None) as batch_op:
        for name in reversed(KEY_TIMES):
            batch_op.drop_column(name)
    op.drop_table('erasure')
