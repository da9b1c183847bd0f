"""Table classes of the store: one SQLModel class per concept.

JSON payloads (cases, answers, guard verdicts, audit snapshots) are stored as text so the same
schema works on SQLite and on any other SQLAlchemy database. Timestamps are UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, UniqueConstraint, event
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

ROLES: tuple[str, ...] = ("agent", "reviewer", "ops")
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "corrected", "flagged_ambiguous")
DONE_STATUSES = frozenset({"approved", "corrected"})  # a case with one of these needs no more review
CASE_SOURCES: tuple[str, ...] = ("eval", "try", "batch", "import")
VERSION_STATUSES: tuple[str, ...] = ("champion", "challenger", "retired")
JOB_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "cancelled")
BATCH_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class TextTooLong(ValueError):
    """A row holds more characters in a column than the schema allows; ``field`` is ``table.column``."""

    def __init__(self, field: str, length: int, max_chars: int) -> None:
        super().__init__(f"{field}: text of {length} characters; this column takes at most {max_chars}")
        self.field = field


class BoundedText(TypeDecorator[str]):
    """Text the schema limits to ``max_chars`` characters: a row holding more is refused when it is
    inserted or updated (:class:`TextTooLong`), on SQLite and PostgreSQL alike; lookups with a longer
    value just find nothing. The column stays a plain VARCHAR, so a limit can be set or changed without
    a migration. (NUL is refused in every text column, by ``db.store``.)"""

    impl = String
    cache_ok = True

    def __init__(self, max_chars: int) -> None:
        super().__init__()
        self.max_chars = max_chars


@event.listens_for(SQLModel, "before_insert", propagate=True)
@event.listens_for(SQLModel, "before_update", propagate=True)
def _refuse_oversized_text(_mapper: Any, _connection: Any, row: SQLModel) -> None:
    for column in row.__table__.columns:  # type: ignore[attr-defined]
        if isinstance(column.type, BoundedText):
            value = getattr(row, column.key, None)
            if isinstance(value, str) and len(value) > column.type.max_chars:
                raise TextTooLong(f"{column.table.name}.{column.key}", len(value), column.type.max_chars)


USERNAME_MAX_CHARS = 64
NOTE_MAX_CHARS = 4000  # a ceiling above the console's own limit on review notes
FILTER_NAME_MAX_CHARS = 200
BATCH_SOURCE_MAX_CHARS = 1000  # the file a batch was read from (the Batch tab's path limit)
BATCH_ERROR_MAX_CHARS = 300


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
    note: str = Field(default="", sa_type=BoundedText(NOTE_MAX_CHARS))
    answer_json: str | None = None  # the approved or corrected answer
    model_run_id: int | None = Field(default=None, foreign_key="model_runs.id")
    created_at: datetime = Field(default_factory=utcnow)
    # The answer's consistency check when saved (issue 18): a JSON list of {"code", "message"}; "[]" when
    # it passed; None when no answer was checked (a flag, a review from before the check, a bulk approval).
    consistency_json: str | None = None

    @property
    def consistency_issues(self) -> list[dict[str, str]] | None:
        """The recorded consistency issues ([] when none), or None when the answer was not checked."""
        return json.loads(self.consistency_json) if self.consistency_json is not None else None


class User(SQLModel, table=True):
    """A console user; ``password_hash`` is ``scrypt$n$r$p$salt$hash`` (hex)."""

    __tablename__ = "users"
    username: str = Field(primary_key=True, sa_type=BoundedText(USERNAME_MAX_CHARS))
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


# Adapter versions and retraining jobs (migration m003_adapter_versions).

class AdapterVersion(SQLModel, table=True):
    """One trained LoRA adapter and its figures (JSON columns are text, like the rest of the store)."""

    __tablename__ = "adapter_versions"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)  # ft-v1, ft-v2, ...
    path: str  # the adapter dir (adapter_config.json + weights)
    base: str  # the base model it was trained on
    status: str = "challenger"  # one of VERSION_STATUSES
    run_config_json: str | None = None  # run_config.json of the training run
    data_hashes_json: str | None = None  # data_sha256.json: sha256 per training file
    metrics_json: str | None = None  # metrics.json: losses, runtime
    evaluation_json: str | None = None  # comparison with the champion (engine.champion)
    job_id: int | None = None  # the training job that made it (db.jobs), None for the bundled one
    created_by: str = "system"
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None

    def evaluation(self) -> dict[str, Any] | None:
        return json.loads(self.evaluation_json) if self.evaluation_json else None

    def metrics(self) -> dict[str, Any] | None:
        return json.loads(self.metrics_json) if self.metrics_json else None


class TrainingJob(SQLModel, table=True):
    """One retraining run from the console: its request, process and outcome."""

    __tablename__ = "training_jobs"
    id: int | None = Field(default=None, primary_key=True)
    version_name: str = Field(index=True)  # the ft-vN it will register
    run_dir: str
    status: str = "running"  # one of JOB_STATUSES
    pid: int | None = None
    request_json: str
    command_json: str
    created_by: str
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    exit_code: int | None = None
    error: str | None = None


# Shadow routing (m003_shadow_settings).

class ShadowSetting(SQLModel, table=True):
    """The one row (id 1) saying which share of new cases also goes to the challenger."""

    __tablename__ = "shadow_settings"
    id: int | None = Field(default=None, primary_key=True)
    share: float = 0.0
    updated_by: str = "system"
    updated_at: datetime = Field(default_factory=utcnow)


# Reviewer throughput: bulk actions, saved filters, review settings (m004_review_throughput).
class BulkAction(SQLModel, table=True):
    """One bulk action (e.g. approve the fine-tuned answer of every case a filter selects)."""

    __tablename__ = "bulk_actions"
    id: int | None = Field(default=None, primary_key=True)
    actor: str = Field(foreign_key="users.username")
    kind: str  # approve_finetuned
    filter_json: str  # the queue filter that selected the cases
    count: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    undone_at: datetime | None = None
    undone_by: str | None = None


class BulkActionItem(SQLModel, table=True):
    """A review a bulk action wrote. ``review_id`` has no foreign key: undo deletes the review and
    the item stays as the record of what was undone."""

    __tablename__ = "bulk_action_items"
    id: int | None = Field(default=None, primary_key=True)
    bulk_action_id: int = Field(foreign_key="bulk_actions.id", index=True)
    case_pk: int = Field(foreign_key="cases.id")
    review_id: int = Field(unique=True)


class SavedFilter(SQLModel, table=True):
    """A named queue filter of one user."""

    __tablename__ = "saved_filters"
    __table_args__ = (UniqueConstraint("owner", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(foreign_key="users.username")
    name: str = Field(sa_type=BoundedText(FILTER_NAME_MAX_CHARS))
    filter_json: str
    created_at: datetime = Field(default_factory=utcnow)


class ReviewSetting(SQLModel, table=True):
    """A console-wide review setting set by ops (``second_opinion_share``: 0..1)."""

    __tablename__ = "review_settings"
    key: str = Field(primary_key=True)
    value: str
    updated_by: str
    updated_at: datetime = Field(default_factory=utcnow)


# Login throttling (m005_login_security).
LOGIN_KINDS: tuple[str, ...] = ("user", "address")


class LoginAttempt(SQLModel, table=True):
    """The consecutive failed logins of one user name (``kind`` user) or one client address (``kind``
    address), and until when they lock it out. Unknown user names get a row too, like real ones, so a
    lockout tells nothing about who exists. A successful login deletes the user name's row."""

    __tablename__ = "login_attempts"
    kind: str = Field(primary_key=True)  # one of LOGIN_KINDS
    subject: str = Field(primary_key=True)  # the user name or address, truncated
    failures: int = 0
    last_failure_at: datetime = Field(default_factory=utcnow)
    locked_until: datetime | None = None


# Idempotent writes (issue 17, finding 7).
class IdempotencyKey(SQLModel, table=True):
    """The first result of a write sent with an idempotency key: a retry with the same key (same
    user, same request) gets this response back instead of writing again. Saved in the same
    transaction as the write it answers, so either both exist or neither."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("actor", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    actor: str  # the user who sent the key: keys are per user
    key: str  # the client's key, 1 to 64 printable characters (policies.text identifier)
    endpoint: str  # submit_review, bulk_approve, ...
    request_sha: str  # sha256 of the request's arguments: a key reused for another request is refused
    response_json: str
    created_at: datetime = Field(default_factory=utcnow)


# Batch runs in the store (0004_batch_runs): a console restart or another console finds them again.
class BatchRun(SQLModel, table=True):
    """One batch run: a file of cases answered by both variants in the background, chunk by chunk.

    ``owner`` is the worker answering it now (a fresh token per start or resume) and ``heartbeat_at``
    when that worker last reported; a run still ``running`` whose heartbeat is old lost its console,
    and the next console to start resumes it (a new owner, ``resumes`` + 1). ``cancel_requested`` is
    how any console stops it: the worker reads it between chunks."""

    __tablename__ = "batch_runs"
    id: int | None = Field(default=None, primary_key=True)
    actor: str = Field(index=True)
    source: str = Field(default="", sa_type=BoundedText(BATCH_SOURCE_MAX_CHARS))
    total: int
    done: int = 0
    status: str = "running"  # one of BATCH_STATUSES
    error: str | None = Field(default=None, sa_type=BoundedText(BATCH_ERROR_MAX_CHARS))
    cancel_requested: bool = False
    owner: str
    resumes: int = 0
    started_at: datetime = Field(default_factory=utcnow)
    heartbeat_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class BatchRunCase(SQLModel, table=True):
    """A case of a batch run, at its place in the file."""

    __tablename__ = "batch_run_cases"
    id: int | None = Field(default=None, primary_key=True)
    batch_run_id: int = Field(foreign_key="batch_runs.id", index=True)
    position: int
    case_pk: int = Field(foreign_key="cases.id")


# Write quotas shared by every console over the store (0005_quota_buckets).
class QuotaBucket(SQLModel, table=True):
    """One user's token bucket for one kind of write: ``tokens`` left at ``at`` (seconds since the
    epoch; the bucket refills from there at its limit's rate). Kept here so that several consoles
    over one store draw on one bucket."""

    __tablename__ = "quota_buckets"
    actor: str = Field(primary_key=True)
    kind: str = Field(primary_key=True)  # review / case / batch
    tokens: float
    at: float
