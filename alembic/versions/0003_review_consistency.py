"""Guard rails on training data (issue 18): reviews.consistency_json, the consistency check of the
approved or corrected answer when it was saved. Existing reviews keep NULL (not checked): the export
checks those itself.

Revision ID: 0003_review_consistency
Revises: 0002_idempotency_keys
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0003_review_consistency"
down_revision: str | None = "0002_idempotency_keys"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("reviews", sa.Column("consistency_json", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reviews", schema=None) as batch_op:  # SQLite before 3.35 cannot drop a column
        batch_op.drop_column("consistency_json")
