"""Bulk actions: approve the fine-tuned answer of every case a queue filter selects, in one go,
and undo a whole bulk action while none of its reviews was exported.

Each review is saved and audited on its own (``review_approved`` with ``bulk_action_id`` in the
snapshot); the bulk action itself is audited too. The role is checked here (reviewer or above),
and so is ownership: a user undoes only their own bulk actions, ops anyone's (:func:`may_undo`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from app.services.idempotency import keyed_write
from app.services.queue import PRESETS, QueueFilter, QueueRow, queue_rows
from app.services.reviews import consistency_record
from db.audit import audit
from db.cases import canonical_json, latest_by_variant, run_answer
from db.models import BulkAction, BulkActionItem, CaseRecord, ExportItem, ModelRun, Review
from db.store import Store
from db.users import authorize, role_allows, role_of_user

BULK_VARIANT = "finetuned"


UNDO_ANY_ROLE = "ops"  # undoes anyone's bulk action; everyone else only their own


class BulkError(ValueError):
    """A bulk action was refused; the message says why (nothing selected, already undone, exported)."""


class NotOwner(BulkError):
    """An undo of someone else's bulk action by a user who is not ops; names the action and its owner."""

    def __init__(self, bulk_action_id: int, owner: str, actor: str, role: str | None):
        self.bulk_action_id, self.owner, self.actor, self.role = bulk_action_id, owner, actor, role
        super().__init__(
            f"bulk_action_id: bulk action #{bulk_action_id} belongs to {owner!r}; user {actor!r} "
            f"(role {role or 'unknown'}) may undo only their own bulk actions ({UNDO_ANY_ROLE} may undo any)"
        )


def may_undo(role: str | None, actor: str | None, action: BulkAction) -> bool:
    """Whether a user of ``role`` may undo ``action``: ops any, reviewers their own, agents none."""
    if not role_allows(role, "approve"):
        return False
    return role == UNDO_ANY_ROLE or (actor is not None and action.actor == actor)


def bulk_candidates(
    session: Session, qfilter: QueueFilter, versions: dict[str, str] | None = None
) -> list[QueueRow]:
    """Rows the filter selects that can be approved now: pending, with a valid fine-tuned answer."""
    return [
        r
        for r in queue_rows(session, qfilter, versions)
        if r.status == "pending" and r.decisions.get(BULK_VARIANT)
    ]


def why_none_selected(
    session: Session, qfilter: QueueFilter, versions: dict[str, str] | None = None
) -> str:
    """A sentence saying why ``qfilter`` selects no case to bulk-approve (call it when
    :func:`bulk_candidates` is empty): nothing matches, nothing matching is pending, or nothing
    pending has a fine-tuned answer yet (answers are computed when a case is opened, or by a batch run)."""
    rows = queue_rows(session, qfilter, versions)
    where = f"the preset '{PRESETS[qfilter.preset]}'" if qfilter.preset in PRESETS else "the filter"
    later = "answers are computed when a case is opened, or by a batch run (Batch run tab)"
    if not rows and qfilter.preset == "agreed_clean":  # the preset needs pending cases both models answered
        pending = [r for r in queue_rows(session, replace(qfilter, preset=None), versions)
                   if r.status == "pending"]
        if not pending:
            return f"No case matches {where}: none is pending, there is nothing to approve."
        if all(len(r.decisions) < 2 for r in pending):
            return f"No case matches {where}: a case qualifies once both models answered it; {later}."
        return (f"No case matches {where}: each pending case both models answered has a disagreement, "
                "a violation or a flag; review those one by one.")
    if not rows:
        return f"No case matches {where}."
    pending = [r for r in rows if r.status == "pending"]
    if not pending:
        return f"{len(rows)} cases match {where}, but none is pending: there is nothing to approve."
    return (
        f"{len(pending)} pending cases match {where}, but none has a valid fine-tuned answer yet; {later}."
    )


def bulk_approve(
    session: Session, actor: str, qfilter: QueueFilter, versions: dict[str, str] | None = None
) -> BulkAction:
    """Approve the fine-tuned answer of every case ``qfilter`` selects (see :func:`bulk_candidates`).

    Raises :class:`db.PermissionDenied` below reviewer, :class:`BulkError` when nothing is selected.
    """
    authorize(session, actor, "approve")
    rows = bulk_candidates(session, qfilter, versions)
    if not rows:
        raise BulkError(f"filter: {why_none_selected(session, qfilter, versions)}")
    pks = [r.case_pk for r in rows]
    runs_by_case: dict[int, list[ModelRun]] = {}
    for run in session.exec(
        select(ModelRun).where(col(ModelRun.case_pk).in_(pks)).order_by(col(ModelRun.id))
    ):
        runs_by_case.setdefault(run.case_pk, []).append(run)
    records = {r.id: r for r in session.exec(select(CaseRecord).where(col(CaseRecord.id).in_(pks)))}
    action = BulkAction(actor=actor, kind="approve_finetuned", filter_json=json.dumps(asdict(qfilter)))
    session.add(action)
    session.flush()
    count = 0
    for pk in pks:
        run = latest_by_variant(runs_by_case.get(pk, []), versions).get(BULK_VARIANT)
        answer = run_answer(run) if run else None
        if run is None or answer is None:
            continue
        review = Review(
            case_pk=pk,
            status="approved",
            reviewer=actor,
            note=f"bulk action #{action.id}",
            answer_json=canonical_json(answer),
            model_run_id=run.id,
            # checked like a one-by-one approval: the export skips or marks an inconsistent answer
            consistency_json=canonical_json(consistency_record(records[pk], answer)),
        )
        session.add(review)
        session.flush()
        session.add(BulkActionItem(bulk_action_id=action.id or 0, case_pk=pk, review_id=review.id or 0))
        audit(
            session, actor, "review_approved", "review", review.id, None,
            {**review.model_dump(), "bulk_action_id": action.id},
        )  # fmt: skip
        count += 1
    action.count = count
    session.add(action)
    audit(session, actor, "bulk_approve", "bulk_action", action.id, None, action)
    return action


def undo_bulk(session: Session, bulk_action_id: int, actor: str) -> BulkAction:
    """Delete every review the bulk action wrote (each audited as ``review_undone``).

    Refused with :class:`BulkError` (saying why) when the action is unknown, already undone, or any
    of its reviews was exported; with :class:`NotOwner` (a BulkError naming the owner, audited as
    ``denied`` and committed at once, like a role refusal) when it is someone else's and ``actor``
    is not ops. Raises :class:`db.PermissionDenied` below reviewer.
    """
    role = authorize(session, actor, "approve")
    action = session.get(BulkAction, bulk_action_id)
    if action is None:
        raise BulkError(f"bulk_action_id: no bulk action #{bulk_action_id}")
    if not may_undo(role, actor, action):
        audit(
            session, actor, "denied", "bulk_action", bulk_action_id, None,
            {"action": "undo_bulk", "role": role, "owner": action.actor},
        )  # fmt: skip
        session.commit()
        raise NotOwner(bulk_action_id, action.actor, actor, role)
    if action.undone_at is not None:
        raise BulkError(f"bulk_action_id: bulk action #{bulk_action_id} was undone already")
    items = list(session.exec(select(BulkActionItem).where(BulkActionItem.bulk_action_id == bulk_action_id)))
    review_ids = [i.review_id for i in items]
    exported = list(
        session.exec(select(ExportItem.review_id).where(col(ExportItem.review_id).in_(review_ids)))
    )
    if exported:
        raise BulkError(
            f"bulk_action_id: {len(exported)} of its reviews were exported already "
            f"(review ids {', '.join(map(str, sorted(exported)[:10]))}); undo is refused"
        )
    before = action.model_dump()
    for review in session.exec(select(Review).where(col(Review.id).in_(review_ids))):
        audit(session, actor, "review_undone", "review", review.id, review, None)
        session.delete(review)
    action.undone_at = datetime.now(UTC)
    action.undone_by = actor
    session.add(action)
    audit(session, actor, "undo_bulk", "bulk_action", action.id, before, action)
    return action


def bulk_actions(session: Session) -> list[BulkAction]:
    """Every bulk action, newest first."""
    return list(session.exec(select(BulkAction).order_by(col(BulkAction.id).desc())))


def undoable_bulk_actions(session: Session, user: str | None) -> list[BulkAction]:
    """The bulk actions ``user`` may undo now (not undone yet; their own, or all for ops), newest
    first. Empty for agents and unknown users. (Export state is checked by :func:`undo_bulk`.)"""
    role = role_of_user(session, user)
    return [a for a in bulk_actions(session) if a.undone_at is None and may_undo(role, user, a)]


def bulk_approve_once(
    store: Store, actor: str, key: str, qfilter: QueueFilter, versions: dict[str, str] | None = None
) -> tuple[dict[str, int], bool]:
    """:func:`bulk_approve` under an idempotency key (issue 17, finding 7): the confirmation's key,
    so a double-clicked or retried Confirm returns the first bulk action instead of approving again.
    Returns (``{"bulk_action_id", "count"}``, replayed)."""

    def write(session: Session) -> dict[str, int]:
        action = bulk_approve(session, actor, qfilter, versions)
        return {"bulk_action_id": action.id or 0, "count": action.count}

    return keyed_write(store, actor, key, "bulk_approve", {"filter": asdict(qfilter)}, write)
