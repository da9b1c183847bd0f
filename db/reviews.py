"""Review rows: append one, read a case's latest. The latest review of a case is its status
(``pending`` when it has none). What a review action means is app.services.reviews'."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from db.audit import audit
from db.cases import canonical_json
from db.models import Review


def add_review(
    session: Session,
    case_pk: int,
    status: str,
    reviewer: str,
    note: str = "",
    answer: dict[str, Any] | None = None,
    model_run_id: int | None = None,
    consistency: list[dict[str, str]] | None = None,
) -> Review:
    """Append a review row (audited). Low level: prefer :func:`submit_review`.

    ``consistency``: the answer's consistency issues (``{"code", "message"}`` each, [] when none), stored
    as JSON; None when the answer was not checked."""
    review = Review(
        case_pk=case_pk,
        status=status,
        reviewer=reviewer,
        note=note,
        answer_json=canonical_json(answer) if answer is not None else None,
        model_run_id=model_run_id,
        consistency_json=canonical_json(consistency) if consistency is not None else None,
    )
    session.add(review)
    session.flush()
    audit(session, reviewer, f"review_{status}", "review", review.id, None, review)
    return review


def latest_review(session: Session, case_pk: int) -> Review | None:
    return session.exec(
        select(Review).where(Review.case_pk == case_pk).order_by(col(Review.id).desc())
    ).first()


def case_status(session: Session, case_pk: int) -> str:
    review = latest_review(session, case_pk)
    return review.status if review else "pending"
