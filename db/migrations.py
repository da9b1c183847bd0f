"""Numbered schema migrations, applied in order on open and recorded in ``schema_migrations``.

Like simonw/llm's ``migrations.py``: each migration is a small function registered with
``@migration``; :func:`migrate` runs those not yet recorded, each in its own transaction, so an
old database upgrades itself when opened. Never edit a migration that has shipped: add a new one.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from db.models import (
    AdapterVersion,
    AuditEntry,
    BulkAction,
    BulkActionItem,
    CaseRecord,
    Export,
    ExportItem,
    LoginAttempt,
    ModelRun,
    Review,
    ReviewSetting,
    SavedFilter,
    SchemaMigration,
    ShadowSetting,
    TrainingJob,
    User,
)

Migration = Callable[[Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    """Register ``fn`` as the next migration; its name (``m001_...``) is what gets recorded."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(conn: Connection) -> None:
    tables = [User, CaseRecord, ModelRun, Review, AuditEntry, Export, ExportItem]
    SchemaMigration.metadata.create_all(conn, tables=[t.__table__ for t in tables])  # type: ignore[attr-defined]


@migration
def m002_audit_append_only(conn: Connection) -> None:
    # The audit log is append-only at the database level too, not just by convention.
    if conn.dialect.name != "sqlite":
        return
    for op in ("UPDATE", "DELETE"):
        conn.execute(
            text(
                f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
        )


@migration
def m003_adapter_versions(conn: Connection) -> None:
    # Versioned adapters and retraining jobs (issue 6): new tables only.
    for table in (AdapterVersion, TrainingJob):
        table.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


@migration
def m003_shadow_settings(conn: Connection) -> None:
    # Shadow routing of new cases to the challenger (issue 6): a new one-row table.
    ShadowSetting.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


@migration
def m004_review_throughput(conn: Connection) -> None:
    # Bulk actions, saved queue filters and review settings (issue 9): new tables only.
    for table in (BulkAction, BulkActionItem, SavedFilter, ReviewSetting):
        table.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


@migration
def m005_login_security(conn: Connection) -> None:
    # Failed-login counters and lockouts that survive a restart (issue 17, finding 6): a new table.
    LoginAttempt.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


def applied(engine: Engine) -> list[str]:
    """Names of the migrations recorded in the database, in the order applied."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("schema_migrations"):
            return []
        return [
            row[0]
            for row in conn.execute(text("SELECT name FROM schema_migrations ORDER BY applied_at, name"))
        ]


def migrate(engine: Engine) -> list[str]:
    """Apply the migrations not yet recorded; returns the names applied now."""
    with engine.begin() as conn:
        SchemaMigration.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]
    done = set(applied(engine))
    ran = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with engine.begin() as conn:
            fn(conn)
            conn.execute(
                text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, CURRENT_TIMESTAMP)"),
                {"n": name},
            )
        ran.append(name)
    return ran
