"""The store: SQLModel tables, numbered migrations and small audited CRUD functions taking a Session.

Open it with :func:`open_store` (SQLite at ``var/policyops.db`` by default, any SQLAlchemy URL);
every write goes through a function here that appends to the audit log in the same transaction.
"""

from db.audit import audit, audit_entries
from db.cases import (
    add_case,
    case_of,
    find_run,
    get_case,
    load_eval_set,
    read_case_rows,
    resolve_case_ref,
    run_answer,
    run_guard,
    runs_for_case,
    save_run,
)
from db.exports import ExportError, ExportResult, eval_fingerprints_of, export_reviews
from db.metrics import corrections_per_rule, model_metrics, reviewer_agreement
from db.migrations import MIGRATIONS, applied, migrate
from db.models import (
    REVIEW_STATUSES,
    ROLES,
    AuditEntry,
    CaseRecord,
    Export,
    ExportItem,
    ModelRun,
    Review,
    User,
)
from db.queue import QueueFilter, QueueRow, queue_rows
from db.reviews import REVIEW_ACTIONS, ReviewError, better_run, case_status, latest_review, submit_review
from db.store import DEFAULT_DB_URL, Store, open_store
from db.users import (
    PermissionDenied,
    UserError,
    authenticate,
    authorize,
    create_user,
    ensure_admin,
    hash_password,
    role_allows,
    role_of_user,
    verify_password,
)
from db.workflows import (
    compare_case,
    compare_new_case,
    current_runs,
    engine_versions,
    prompt_format_of,
    run_batch,
)

__all__ = [
    "DEFAULT_DB_URL",
    "MIGRATIONS",
    "REVIEW_ACTIONS",
    "REVIEW_STATUSES",
    "ROLES",
    "AuditEntry",
    "CaseRecord",
    "Export",
    "ExportError",
    "ExportItem",
    "ExportResult",
    "ModelRun",
    "PermissionDenied",
    "QueueFilter",
    "QueueRow",
    "Review",
    "ReviewError",
    "Store",
    "User",
    "UserError",
    "add_case",
    "applied",
    "audit",
    "audit_entries",
    "authenticate",
    "authorize",
    "better_run",
    "case_of",
    "case_status",
    "compare_case",
    "compare_new_case",
    "corrections_per_rule",
    "create_user",
    "current_runs",
    "engine_versions",
    "prompt_format_of",
    "ensure_admin",
    "eval_fingerprints_of",
    "export_reviews",
    "find_run",
    "get_case",
    "hash_password",
    "latest_review",
    "load_eval_set",
    "migrate",
    "model_metrics",
    "open_store",
    "queue_rows",
    "read_case_rows",
    "resolve_case_ref",
    "role_of_user",
    "reviewer_agreement",
    "role_allows",
    "run_answer",
    "run_batch",
    "run_guard",
    "runs_for_case",
    "save_run",
    "submit_review",
    "verify_password",
]
