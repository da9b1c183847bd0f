"""Table classes of the store: one SQLModel class per concept.

JSON payloads (cases, answers, guard verdicts, audit snapshots) are stored as text so the same
schema works on SQLite and on any other SQLAlchemy database. Timestamps are UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

ROLES: tuple[str, ...] = ("agent", "reviewer", "ops")
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "corrected", "flagged_ambiguous")
CASE_SOURCES: tuple[str, ...] = ("eval", "try", "batch", "import")


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchemaMigration(SQLModel, table=True):
    """One applied migration (``m001_initial``, ...), like simonw/llm's ``_llm_migrations``."""

    __tablename__ = "schema_migrations"
    name: str = Field(primary_key=True)
    applied_at: datetime = Field(default_factory=utcnow)


class CaseRecord(SQLModel, table=True):
    """A case as the console saw it. ``content_sha`` (over the whole case) makes edits new rows."""

    __tablename__ = "cases"
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(index=True)
    content_sha: str = Field(unique=True)
    body_sha: str = Field(index=True)  # the case without its case_id: catches eval cases under a new id
    case_json: str
    source: str = "import"
    in_eval_set: bool = False
    region: str = Field(index=True)
    request_type: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class ModelRun(SQLModel, table=True):
    """One model answer to one case; computed once per (case, variant, model_version)."""

    __tablename__ = "model_runs"
    __table_args__ = (UniqueConstraint("case_pk", "variant", "model_version"),)
    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    variant: str
    model_version: str
    status: str  # ok / invalid / truncated
    decision: str | None = None
    answer_json: str | None = None
    raw_text: str = ""
    error: str | None = None
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    truncated: bool = False
    guard_json: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Review(SQLModel, table=True):
    """A reviewer's action on a case; the latest review of a case is its status."""

    __tablename__ = "reviews"
    id: int | None = Field(default=None, primary_key=True)
    case_pk: int = Field(foreign_key="cases.id", index=True)
    status: str  # one of REVIEW_STATUSES
    reviewer: str = Field(foreign_key="users.username")
    note: str = ""
    answer_json: str | None = None  # the approved or corrected answer
    model_run_id: int | None = Field(default=None, foreign_key="model_runs.id")
    created_at: datetime = Field(default_factory=utcnow)


class User(SQLModel, table=True):
    """A console user; ``password_hash`` is ``scrypt$n$r$p$salt$hash`` (hex)."""

    __tablename__ = "users"
    username: str = Field(primary_key=True)
    role: str
    password_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class AuditEntry(SQLModel, table=True):
    """Append-only: who did what to which entity, with before and after snapshots."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    entity: str
    entity_id: str
    before_json: str | None = None
    after_json: str | None = None


class Export(SQLModel, table=True):
    """One SFT export file and its manifest."""

    __tablename__ = "exports"
    id: int | None = Field(default=None, primary_key=True)
    path: str
    manifest_path: str
    sha256: str
    count: int
    created_by: str = Field(foreign_key="users.username")
    created_at: datetime = Field(default_factory=utcnow)


class ExportItem(SQLModel, table=True):
    """Which review went into which export; a review is exported at most once (unique review_id)."""

    __tablename__ = "export_items"
    id: int | None = Field(default=None, primary_key=True)
    export_id: int = Field(foreign_key="exports.id", index=True)
    review_id: int = Field(foreign_key="reviews.id", unique=True)
    example_sha: str = Field(index=True)  # sha256 of the exported messages: duplicates are dropped
