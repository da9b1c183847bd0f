"""Batch runs in the store: batch_runs and batch_run_cases. Until now the console kept its batch jobs
in memory, so a restart lost the list (the answers were saved) and a second console never saw them.

Revision ID: 0004_batch_runs
Revises: 0003_review_consistency
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0004_batch_runs"
down_revision: str | None = "0003_review_consistency"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table("batch_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("resumes", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batch_runs_actor", "batch_runs", ["actor"])
    op.create_table("batch_run_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_run_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_run_id"], ["batch_runs.id"]),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batch_run_cases_batch_run_id", "batch_run_cases", ["batch_run_id"])


def downgrade() -> None:
    op.drop_table("batch_run_cases")
    op.drop_table("batch_runs")
