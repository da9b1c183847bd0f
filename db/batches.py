"""Batch runs' rows: which cases a batch holds, how far it got, which worker answers it now and
whether someone asked it to stop. Running them is app.services.batches'."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

from db.audit import audit
from db.models import BATCH_ERROR_MAX_CHARS, BatchRun, BatchRunCase, utcnow


def _aware(at: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def create_batch_run(
    session: Session, actor: str, source: str, case_pks: Sequence[int], owner: str
) -> BatchRun:
    """A running batch over ``case_pks`` (in file order), answered by the worker ``owner``; audited."""
    run = BatchRun(actor=actor, source=source, total=len(case_pks), owner=owner)
    session.add(run)
    session.flush()
    session.add_all(
        BatchRunCase(batch_run_id=run.id or 0, position=i, case_pk=pk) for i, pk in enumerate(case_pks)
    )
    audit(session, actor, "batch_start", "batch_run", run.id, None, run)
    return run


def batch_case_pks(session: Session, run_id: int) -> list[int]:
    """The batch's cases, in file order."""
    stmt = select(BatchRunCase.case_pk).where(BatchRunCase.batch_run_id == run_id)
    return list(session.exec(stmt.order_by(col(BatchRunCase.position))))


def _answered_by(session: Session, run_id: int, owner: str) -> BatchRun | None:
    """The run while it is running and ``owner`` answers it; None once another worker has taken it
    over or it has ended."""
    run = session.get(BatchRun, run_id)
    return run if run is not None and run.owner == owner and run.status == "running" else None


def report_progress(session: Session, run_id: int, owner: str, done: int | None = None) -> str:
    """The worker ``owner`` reports (``done`` cases so far, when given) and learns what to do next:
    ``"go"``; ``"cancel"`` when someone asked the run to stop; ``"lost"`` when another worker has
    taken the run over (its heartbeat had gone stale) or it has ended."""
    run = _answered_by(session, run_id, owner)
    if run is None:
        return "lost"
    run.heartbeat_at = utcnow()
    if done is not None:
        run.done = done
    session.add(run)
    return "cancel" if run.cancel_requested else "go"


def finish_batch_run(
    session: Session, run_id: int, owner: str, status: str, error: str | None = None
) -> bool:
    """End the run as ``status`` (succeeded / cancelled / failed, with ``error``) if ``owner`` still
    answers it; False when another worker has it (then it is theirs to end)."""
    run = _answered_by(session, run_id, owner)
    if run is None:
        return False
    before = run.model_dump()
    run.status, run.finished_at = status, utcnow()
    run.error = error[:BATCH_ERROR_MAX_CHARS] if error else None
    session.add(run)
    audit(session, run.actor, f"batch_{status}", "batch_run", run.id, before, run)
    return True


def request_cancel(session: Session, actor: str, runs_of: str | None, run_id: int | None = None) -> list[int]:
    """Ask the running batches of ``runs_of`` (every user's when None; only run ``run_id`` when given)
    to stop after their chunk; audited as ``actor``. Returns their ids."""
    stmt = select(BatchRun).where(BatchRun.status == "running", BatchRun.cancel_requested == False)  # noqa: E712
    if runs_of is not None:
        stmt = stmt.where(BatchRun.actor == runs_of)
    if run_id is not None:
        stmt = stmt.where(BatchRun.id == run_id)
    ids = []
    for run in session.exec(stmt):
        run.cancel_requested = True
        session.add(run)
        audit(session, actor, "batch_cancel", "batch_run", run.id, None, {"cancel_requested": True})
        ids.append(run.id or 0)
    return ids


def claim_stale_runs(
    session: Session, owner: str, stale_s: float, now: datetime | None = None
) -> list[BatchRun]:
    """Take over every running batch whose worker is gone: it has not reported for ``stale_s``
    seconds (its console stopped), or it belonged to an earlier process of the same console. Owners
    are ``CONSOLE/PROCESS/TOKEN``: a console is one address (``host:port``), which a live process
    would still hold, so another process of it means the old one has stopped. Each run claimed gets
    ``owner``, a fresh heartbeat and one more resume (audited). Run it in a write transaction
    (``Store.write``), so two consoles starting at once never claim the same run."""
    cutoff = (now or utcnow()) - timedelta(seconds=stale_s)
    console, process = owner.split("/")[:2]
    claimed = []
    for run in session.exec(select(BatchRun).where(BatchRun.status == "running")):
        was_console, was_process = (run.owner.split("/") + ["", ""])[:2]
        earlier_self = was_console == console and was_process != process
        if _aware(run.heartbeat_at) >= cutoff and not earlier_self:
            continue
        before = run.model_dump()
        run.owner, run.heartbeat_at, run.resumes = owner, utcnow(), run.resumes + 1
        session.add(run)
        audit(session, "system", "batch_resume", "batch_run", run.id, before, run)
        claimed.append(run)
    return claimed


def recent_batch_runs(session: Session, actor: str | None, limit: int = 5) -> list[BatchRun]:
    """The latest ``limit`` batch runs of ``actor`` (everyone's when None), newest first."""
    stmt = select(BatchRun).order_by(col(BatchRun.id).desc()).limit(limit)
    if actor is not None:
        stmt = stmt.where(BatchRun.actor == actor)
    return list(session.exec(stmt))


def get_batch_run(session: Session, run_id: int) -> BatchRun | None:
    return session.get(BatchRun, run_id)
