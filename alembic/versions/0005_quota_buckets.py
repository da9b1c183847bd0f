"""Write quotas shared by the consoles over one store: quota_buckets. Until now each console process
kept its own token buckets, so N consoles on one store allowed each user N times the quota.

Revision ID: 0005_quota_buckets
Revises: 0004_batch_runs
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0005_quota_buckets"
down_revision: str | None = "0004_batch_runs"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table("quota_buckets",
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("actor", "kind"),
    )


def downgrade() -> None:
    op.drop_table("quota_buckets")
