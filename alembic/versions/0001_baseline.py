"""The store's schema as the numbered migrations m001-m005 left it: the first Alembic revision.

Written out table by table (never ``create_all`` from today's models), so later revisions change it
step by step. Beyond the tables: the audit log is append-only by trigger on SQLite and PostgreSQL.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_SQLITE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_{op} BEFORE {OP} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
)
_POSTGRES_FUNCTION = (
    "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
)


def create_audit_append_only() -> None:
    """Refuse UPDATE and DELETE on audit_log (and TRUNCATE on PostgreSQL) in the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for name in ("update", "delete"):
            op.execute(_SQLITE_TRIGGER.format(op=name, OP=name.upper()))
        return
    op.execute(_POSTGRES_FUNCTION)
    for name, when in (("update", "UPDATE"), ("delete", "DELETE")):
        op.execute(f"CREATE TRIGGER audit_log_no_{name} BEFORE {when} ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")
    op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
               "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()")


def drop_audit_append_only() -> None:
    for name in ("update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{name}"
                   + ("" if op.get_bind().dialect.name == "sqlite" else " ON audit_log"))
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")


def upgrade() -> None:
    op.create_table("adapter_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("base", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("run_config_json", sa.String(), nullable=True),
        sa.Column("data_hashes_json", sa.String(), nullable=True),
        sa.Column("metrics_json", sa.String(), nullable=True),
        sa.Column("evaluation_json", sa.String(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_adapter_versions_name"), ["name"], unique=True)

    op.create_table("audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("entity", sa.String(), nullable=False),
        sa.Column("entity_id", sa.String(), nullable=False),
        sa.Column("before_json", sa.String(), nullable=True),
        sa.Column("after_json", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.String(), nullable=False),
        sa.Column("content_sha", sa.String(), nullable=False),
        sa.Column("body_sha", sa.String(), nullable=False),
        sa.Column("case_json", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("in_eval_set", sa.Boolean(), nullable=False),
        sa.Column("region", sa.String(), nullable=False),
        sa.Column("request_type", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("content_sha")
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_body_sha"), ["body_sha"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_region"), ["region"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_request_type"), ["request_type"], unique=False)

    op.create_table("login_attempts",
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kind", "subject")
    )
    op.create_table("review_settings",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key")
    )
    op.create_table("shadow_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("training_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_name", sa.String(), nullable=False),
        sa.Column("run_dir", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("request_json", sa.String(), nullable=False),
        sa.Column("command_json", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_training_jobs_version_name"), ["version_name"], unique=False)

    op.create_table("users",
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username")
    )
    op.create_table("bulk_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("filter_json", sa.String(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["actor"], ["users.username"], ),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("manifest_path", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["users.username"], ),
        sa.PrimaryKeyConstraint("id")
    )
    op.create_table("model_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=True),
        sa.Column("answer_json", sa.String(), nullable=True),
        sa.Column("raw_text", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("guard_json", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_pk", "variant", "model_version")
    )
    with op.batch_alter_table("model_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_runs_case_pk"), ["case_pk"], unique=False)

    op.create_table("saved_filters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("filter_json", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner"], ["users.username"], ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "name")
    )
    op.create_table("bulk_action_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bulk_action_id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["bulk_action_id"], ["bulk_actions.id"], ),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("review_id")
    )
    with op.batch_alter_table("bulk_action_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_action_items_bulk_action_id"), ["bulk_action_id"],
                              unique=False)

    op.create_table("reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_pk", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reviewer", sa.String(), nullable=False),
        sa.Column("note", sa.String(), nullable=False),
        sa.Column("answer_json", sa.String(), nullable=True),
        sa.Column("model_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_pk"], ["cases.id"], ),
        sa.ForeignKeyConstraint(["model_run_id"], ["model_runs.id"], ),
        sa.ForeignKeyConstraint(["reviewer"], ["users.username"], ),
        sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reviews_case_pk"), ["case_pk"], unique=False)

    op.create_table("export_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("export_id", sa.Integer(), nullable=False),
        sa.Column("review_id", sa.Integer(), nullable=False),
        sa.Column("example_sha", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["export_id"], ["exports.id"], ),
        sa.ForeignKeyConstraint(["review_id"], ["reviews.id"], ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("review_id")
    )
    with op.batch_alter_table("export_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_export_items_example_sha"), ["example_sha"], unique=False)
        batch_op.create_index(batch_op.f("ix_export_items_export_id"), ["export_id"], unique=False)
    create_audit_append_only()


def downgrade() -> None:
    drop_audit_append_only()
    with op.batch_alter_table("export_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_export_items_export_id"))
        batch_op.drop_index(batch_op.f("ix_export_items_example_sha"))

    op.drop_table("export_items")
    with op.batch_alter_table("reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reviews_case_pk"))

    op.drop_table("reviews")
    with op.batch_alter_table("bulk_action_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_action_items_bulk_action_id"))

    op.drop_table("bulk_action_items")
    op.drop_table("saved_filters")
    with op.batch_alter_table("model_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_runs_case_pk"))

    op.drop_table("model_runs")
    op.drop_table("exports")
    op.drop_table("bulk_actions")
    op.drop_table("users")
    with op.batch_alter_table("training_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_training_jobs_version_name"))

    op.drop_table("training_jobs")
    op.drop_table("shadow_settings")
    op.drop_table("review_settings")
    op.drop_table("login_attempts")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_request_type"))
        batch_op.drop_index(batch_op.f("ix_cases_region"))
        batch_op.drop_index(batch_op.f("ix_cases_case_id"))
        batch_op.drop_index(batch_op.f("ix_cases_body_sha"))

    op.drop_table("cases")
    op.drop_table("audit_log")
    with op.batch_alter_table("adapter_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_adapter_versions_name"))

    op.drop_table("adapter_versions")
