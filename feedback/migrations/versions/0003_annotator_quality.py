"""annotator quality

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:12:31.402118
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('annotator_quality',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('reward_model', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('reward_model_agreement', sa.Float(), nullable=True),
    sa.Column('reward_model_items', sa.Integer(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('annotator_quality')
