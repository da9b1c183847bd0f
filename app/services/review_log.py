"""Reviews as the console shows them: a correction with the model answer it started from, and the
recent review entries of the audit log. Second-opinion verdicts stay hidden from other reviewers
(:func:`app.services.second_opinion.visible_reviews`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from app.services.second_opinion import visible_reviews
from db.cases import run_answer
from db.models import AuditEntry, CaseRecord, ModelRun, Review


@dataclass(frozen=True)
class Correction:
    """A corrected answer and the model answer it started from (None when that was invalid)."""

    review_id: int
    case_pk: int
    reviewer: str
    corrected: dict[str, Any]
    start: dict[str, Any] | None
    at: datetime | None = None


def _start_answer(session: Session, model_run_id: int | None) -> dict[str, Any] | None:
    run = session.get(ModelRun, model_run_id) if model_run_id else None
    return run_answer(run) if run else None


def latest_correction(session: Session, case_pk: int, viewer: str | None) -> Correction | None:
    """The case's latest correction ``viewer`` may see, else None."""
    for review in reversed(visible_reviews(session, case_pk, viewer)):
        if review.status == "corrected" and review.answer_json:
            return Correction(
                review.id or 0,
                case_pk,
                review.reviewer,
                json.loads(review.answer_json),
                _start_answer(session, review.model_run_id),
                review.created_at,
            )
    return None


@dataclass(frozen=True)
class LogEntry:
    """One audit entry about a review, with the correction when it is one."""

    entry_id: int
    at: datetime
    actor: str
    action: str
    case_pk: int | None
    review_id: int | None
    correction: Correction | None
    case_id: str | None = None  # the case's own id (``C-...``), what people quote


def review_log(session: Session, viewer: str | None, limit: int = 50) -> list[LogEntry]:
    """The latest ``limit`` audit entries about reviews, newest first, that ``viewer`` may see."""
    entries = session.exec(
        select(AuditEntry)
        .where(AuditEntry.entity == "review")
        .order_by(col(AuditEntry.id).desc())
        .limit(limit * 2)  # room for the hidden ones
    ).all()
    visible: dict[int, set[int]] = {}
    out: list[LogEntry] = []
    for e in entries:
        snap = json.loads(e.after_json or e.before_json or "{}")
        case_pk = snap.get("case_pk")
        if case_pk is not None:
            if case_pk not in visible:
                visible[case_pk] = {r.id or 0 for r in visible_reviews(session, case_pk, viewer)}
            alive = session.get(Review, int(e.entity_id)) is not None
            if alive and int(e.entity_id) not in visible[case_pk]:
                continue
        correction = None
        if e.action == "review_corrected" and snap.get("answer_json"):
            correction = Correction(
                int(e.entity_id),
                case_pk,
                e.actor,
                json.loads(snap["answer_json"]),
                _start_answer(session, snap.get("model_run_id")),
                e.at,
            )
        record = session.get(CaseRecord, case_pk) if case_pk is not None else None
        case_id = record.case_id if record is not None else None
        out.append(
            LogEntry(e.id or 0, e.at, e.actor, e.action, case_pk, int(e.entity_id), correction, case_id)
        )
        if len(out) >= limit:
            break
    return out
