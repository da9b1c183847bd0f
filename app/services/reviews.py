"""Reviews: approve a model's answer, flag a case as ambiguous, or save a corrected answer.

A correction is validated with :func:`policies.parse_answer` and the note with
:func:`policies.text.clean_text` (at most MAX_NOTE_CHARS, no control, bidi or zero-width character)
before anything is written, so a bad review is refused with the field at fault and earlier reviews
stay as they were.

An approved or corrected answer is then checked against its case
(:func:`engine.consistency.consistency_issues`: policy_refs against the reasoning, the rule engine and
the decision, next_action against the decision, garbled or repeated text). The check never blocks
the save: its issues are recorded with the review (``Review.consistency_json``), handed back to the
caller as warnings, and keep the answer out of the training data unless an export asks for it
(:func:`app.services.exports.export_reviews`).
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, col, select

from db.cases import case_of, get_case, run_answer
from db.models import CaseRecord, ModelRun, Review
from db.reviews import add_review
from engine.consistency import consistency_issues
from policies import parse_answer
from policies.text import TextError, clean_text

REVIEW_ACTIONS: tuple[str, ...] = ("approve_base", "approve_finetuned", "flag", "correct")
MAX_NOTE_CHARS = 2000  # stored twice (the review and its audit snapshot)
MAX_ANSWER_CHARS = 20_000  # a corrected answer as JSON text; its prose fields have their own bounds


class ReviewError(ValueError):
    """A review could not be saved; the message names the field (case_id, action, answer, note)."""


def correction_start(runs: dict[str, ModelRun]) -> ModelRun | None:
    """The model answer a correction replaces: the fine-tuned run (the answer a reviewer corrects),
    else whatever single run there is. Never chosen by the guard's expected decision: a form that
    starts from the rule engine's answer nudges reviewers toward it and inflates their agreement."""
    if "finetuned" in runs:
        return runs["finetuned"]
    return next(iter(runs.values()), None) if len(runs) == 1 else None


def submit_review(
    session: Session,
    case_pk: int,
    action: str,
    reviewer: str,
    *,
    runs: dict[str, ModelRun],
    answer: dict[str, Any] | str | None = None,
    note: str = "",
    from_run_id: int | None = None,
    revision: bool = True,
) -> Review:
    """Record ``action`` (one of REVIEW_ACTIONS) on case ``case_pk`` by ``reviewer``.

    ``runs`` are the case's current answers by variant. ``approve_*`` copies that variant's answer;
    ``flag`` needs a note; ``correct`` needs ``answer`` (dict or JSON text) valid for parse_answer.
    The note (stripped) is multiline clean text of at most :data:`MAX_NOTE_CHARS` characters.
    ``revision=False`` keeps one review per (case, reviewer): a second one is then refused (the API's
    default: a client must mark a revision as one). True (the default here, and the case view's
    buttons, each an explicit act on the case shown) appends it; the latest review is the status.
    An approved or corrected answer is checked for consistency (never refused for it): the issues
    are ``review.consistency_issues`` ([] when none).
    Raises :class:`ReviewError` or :class:`policies.InvalidAnswer` (fields named) and writes nothing then.
    Permissions are checked by the caller (:func:`db.users.authorize`).
    """
    if not isinstance(note, str | None):
        raise ReviewError(f"note: must be text (got {type(note).__name__})")
    note = (note or "").strip()
    try:
        clean_text(note, "note", MAX_NOTE_CHARS)
    except TextError as exc:
        raise ReviewError(str(exc)) from None
    record = get_case(session, case_pk)
    if not revision:
        _refuse_second_review(session, case_pk, record.case_id, reviewer)
    if action == "flag":
        if not note:
            raise ReviewError("note: say why the case is ambiguous")
        return add_review(session, case_pk, "flagged_ambiguous", reviewer, note)
    if action in ("approve_base", "approve_finetuned"):
        variant = action.removeprefix("approve_")
        run = runs.get(variant)
        if run is None:
            raise ReviewError(f"action: there is no {variant} answer for case {record.case_id} yet")
        approved = run_answer(run)
        if approved is None:
            raise ReviewError(
                f"action: the {variant} answer is {run.status}; correct it instead of approving"
            )
        return add_review(session, case_pk, "approved", reviewer, note, approved, run.id,
                          consistency_record(record, approved))
    if action == "correct":
        if isinstance(answer, str):
            if len(answer) > MAX_ANSWER_CHARS:
                raise ReviewError(f"answer: at most {MAX_ANSWER_CHARS} characters (got {len(answer)})")
            try:
                answer = json.loads(answer) if answer.strip() else None
            except json.JSONDecodeError as exc:
                raise ReviewError(
                    f"answer: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
                ) from exc
            except RecursionError:  # "[[[[..." deeper than the parser's stack
                raise ReviewError("answer: not valid JSON (nested too deeply)") from None
        if answer is None:
            raise ReviewError("answer: a correction needs the corrected answer")
        corrected = parse_answer(answer).model_dump(mode="json")
        if from_run_id is None:
            start = correction_start(runs)
            from_run_id = start.id if start else None
        return add_review(session, case_pk, "corrected", reviewer, note, corrected, from_run_id,
                          consistency_record(record, corrected))
    raise ReviewError(f"action: must be one of {', '.join(REVIEW_ACTIONS)} (got {action!r})")


def consistency_record(record: CaseRecord, answer: dict[str, Any]) -> list[dict[str, str]]:
    """The consistency issues of ``answer`` to the stored case, as stored with the review (every
    approval and correction, one by one or in bulk)."""
    return [issue.to_dict() for issue in consistency_issues(case_of(record), answer)]


def _refuse_second_review(session: Session, case_pk: int, case_id: str, reviewer: str) -> None:
    first = session.exec(
        select(Review).where(Review.case_pk == case_pk, Review.reviewer == reviewer).order_by(col(Review.id))
    ).first()
    if first is not None:
        raise ReviewError(
            f"case_id: {reviewer} already reviewed {case_id} (review {first.id}, {first.status}); "
            "send it as a revision to change it"
        )
