"""Issue 9 in the store: bulk approve and undo, saved filters, second opinions and kappa."""

from __future__ import annotations

import pytest
from sqlmodel import select

from app.services.bulk import BulkError, bulk_approve, undo_bulk
from app.services.metrics import cohen_kappa
from app.services.queue import QueueFilter, queue_rows
from app.services.reviews import submit_review
from app.services.saved_filters import load_filter, save_filter, saved_filters
from app.services.second_opinion import (
    adjudication_queue,
    inter_reviewer_agreement,
    needs_second_opinion,
    set_second_opinion_share,
    visible_reviews,
    visible_status,
)
from db.audit import audit_entries
from db.cases import add_case, runs_for_case, save_run
from db.models import Export, ExportItem, Review
from db.users import PermissionDenied, create_user
from policies import expected_decision
from tests.conftest import make_answer, make_case

AGREED = QueueFilter(preset="agreed_clean")


def _add(store, case_id: str, ft_agrees: bool = True) -> int:
    case = make_case(case_id)
    exp = expected_decision(case).decision
    other = "DENY" if exp != "DENY" else "APPROVE_RETURN"
    with store.session() as s:
        pk = add_case(s, case, "batch", "otto").id
        save_run(s, pk, make_answer(case, "base", exp), "otto")
        save_run(s, pk, make_answer(case, "finetuned", exp if ft_agrees else other), "otto")
    return pk


def test_cohen_kappa_hand_computed():
    # 10 pairs: p_o = 7/10; rater 1 says A 5 times, rater 2 says A 6 times:
    # p_e = (5*6 + 5*4) / 100 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    pairs = [("A", "A")] * 4 + [("A", "D")] + [("D", "A")] * 2 + [("D", "D")] * 3
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([]) is None
    assert cohen_kappa([("A", "A"), ("A", "A")]) == 1.0


def test_bulk_approve_and_undo(store):
    clean = [_add(store, f"C-10000{i}") for i in range(3)]
    _add(store, "C-200000", ft_agrees=False)  # the models disagree: not selected
    with store.session() as s, pytest.raises(PermissionDenied):
        bulk_approve(s, "ann", AGREED)
    with store.session() as s:
        action = bulk_approve(s, "rita", AGREED)
    assert action.count == 3
    with store.session() as s:
        reviews = s.exec(select(Review)).all()
        assert sorted(r.case_pk for r in reviews) == sorted(clean)
        assert {r.status for r in reviews} == {"approved"}
        # checked like one-by-one approvals (recorded, not None): these answers are consistent
        assert [r.consistency_issues for r in reviews] == [[], [], []]
        tagged = [
            e for e in audit_entries(s, action="review_approved") if '"bulk_action_id": ' in e.after_json
        ]
        assert len(tagged) == 3
        with pytest.raises(BulkError, match="each pending case both models answered has a disagreement"):
            bulk_approve(s, "rita", AGREED)  # nothing left
    with store.session() as s:
        undo_bulk(s, action.id, "rita")
    with store.session() as s:
        assert s.exec(select(Review)).all() == []
        assert len(audit_entries(s, action="review_undone")) == 3
        with pytest.raises(BulkError, match="undone already"):
            undo_bulk(s, action.id, "rita")


def test_undo_refused_after_export(store):
    _add(store, "C-100001")
    with store.session() as s:
        action = bulk_approve(s, "rita", AGREED)
        review = s.exec(select(Review)).one()
        export = Export(path="x.jsonl", manifest_path="x.json", sha256="0", count=1, created_by="otto")
        s.add(export)
        s.flush()
        s.add(ExportItem(export_id=export.id, review_id=review.id, example_sha="0"))
    with store.session() as s, pytest.raises(BulkError, match="exported"):
        undo_bulk(s, action.id, "rita")
    with store.session() as s:
        assert len(s.exec(select(Review)).all()) == 1


def test_saved_filters(store):
    with store.session() as s:
        save_filter(s, "rita", "US returns", QueueFilter(region="US", request_type="return"))
        save_filter(s, "rita", "clean", AGREED)
    with store.session() as s:
        assert [f.name for f in saved_filters(s, "rita")] == ["US returns", "clean"]
        assert saved_filters(s, "otto") == []
        assert load_filter(s, "rita", "US returns") == QueueFilter(region="US", request_type="return")
        assert load_filter(s, "rita", "clean").preset == "agreed_clean"


def test_second_opinion_assignment_is_deterministic_and_proportional():
    ids = [f"C-{i:06d}" for i in range(2000)]
    picked = [c for c in ids if needs_second_opinion(c, 0.1)]
    assert picked == [c for c in ids if needs_second_opinion(c, 0.1)]
    assert 150 < len(picked) < 250
    assert set(picked) <= {c for c in ids if needs_second_opinion(c, 0.2)}  # a larger share adds cases
    assert not any(needs_second_opinion(c, 0.0) for c in ids)


def test_second_reviewer_never_sees_first_verdict(store):
    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
        with pytest.raises(PermissionDenied):
            set_second_opinion_share(s, "rita", 1.0)
    with store.session() as s:
        set_second_opinion_share(s, "otto", 1.0)
    pk = _add(store, "C-100001")
    with store.session() as s:
        submit_review(s, pk, "approve_finetuned", "rita", runs=runs_for_case(s, pk))
    with store.session() as s:
        assert visible_reviews(s, pk, "rex") == []
        assert visible_status(s, pk, "rex") == "pending"
        assert [r.reviewer for r in visible_reviews(s, pk, "rita")] == ["rita"]
        status_as = {v: queue_rows(s, QueueFilter(), None, v)[0].status for v in ("rex", "rita")}
        assert status_as == {"rex": "pending", "rita": "approved"}  # the queue hides it too
        submit_review(s, pk, "flag", "rex", runs=runs_for_case(s, pk), note="unclear")
    with store.session() as s:
        assert [r.reviewer for r in visible_reviews(s, pk, "rex")] == ["rita", "rex"]
        queue = adjudication_queue(s)
        assert list(queue.case_pk) == [pk] and list(queue.second_verdict) == ["FLAG"]
        submit_review(s, pk, "approve_finetuned", "otto", runs=runs_for_case(s, pk))  # ops adjudicates
    with store.session() as s:
        assert adjudication_queue(s).empty


def test_inter_reviewer_kappa_from_reviews(store):
    # verdicts (rita, rex): (X, X), (X, FLAG), (FLAG, FLAG), (X, X)
    # p_o = 3/4; rita X 3 / FLAG 1, rex X 2 / FLAG 2: p_e = (3*2 + 1*2) / 16 = 0.5; kappa = 0.5
    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
        set_second_opinion_share(s, "otto", 1.0)
    plan = [("approve_finetuned", "approve_finetuned"), ("approve_finetuned", "flag"), ("flag", "flag")]
    plan.append(("approve_finetuned", "approve_finetuned"))
    for i, (first, second) in enumerate(plan):
        pk = _add(store, f"C-30000{i}")
        with store.session() as s:
            for who, action in (("rita", first), ("rex", second)):
                submit_review(s, pk, action, who, runs=runs_for_case(s, pk), note="n")
    with store.session() as s:
        frame = inter_reviewer_agreement(s)
    overall = frame[frame.scope == "overall"].iloc[0]
    assert overall.kappa == pytest.approx(0.5) and overall.agreement == pytest.approx(0.75)
    assert overall.n == 4


def test_undo_bulk_is_the_owners_or_ops(store):
    """Issue 17, finding 5: a reviewer cannot undo an ops user's bulk action (nothing deleted, the
    refusal audited and naming the owner); the owner can, and ops can undo anyone's."""
    from app.services.bulk import NotOwner, undoable_bulk_actions

    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
    _add(store, "C-100001")
    with store.session() as s:
        ops_action = bulk_approve(s, "otto", AGREED)
    _add(store, "C-100002")
    with store.session() as s:
        rita_action = bulk_approve(s, "rita", AGREED)
    _add(store, "C-100003")
    with store.session() as s:
        rex_action = bulk_approve(s, "rex", AGREED)
    with store.session() as s:
        assert [a.id for a in undoable_bulk_actions(s, "rita")] == [rita_action.id]
        newest_first = [rex_action.id, rita_action.id, ops_action.id]
        assert [a.id for a in undoable_bulk_actions(s, "otto")] == newest_first
        assert undoable_bulk_actions(s, "ann") == [] and undoable_bulk_actions(s, "nobody") == []
    with store.session() as s, pytest.raises(NotOwner, match=rf"bulk_action_id: .*#{ops_action.id}.*'otto'"):
        undo_bulk(s, ops_action.id, "rita")
    with store.session() as s, pytest.raises(BulkError, match="'rita'"):
        undo_bulk(s, rita_action.id, "rex")  # a reviewer's, too
    with store.session() as s, pytest.raises(PermissionDenied):
        undo_bulk(s, rita_action.id, "ann")
    with store.session() as s:
        assert len(s.exec(select(Review)).all()) == 3  # nothing deleted
        ids = (ops_action.id, rita_action.id, rex_action.id)
        assert all(s.get(type(ops_action), i).undone_at is None for i in ids)
        denied = [(e.actor, e.entity, e.entity_id) for e in audit_entries(s, action="denied")]
        assert ("rita", "bulk_action", str(ops_action.id)) in denied
        assert ("rex", "bulk_action", str(rita_action.id)) in denied
        assert audit_entries(s, action="review_undone") == []
    with store.session() as s:
        undo_bulk(s, rita_action.id, "rita")  # the owner
        undo_bulk(s, rex_action.id, "otto")  # ops undoes anyone's
        undo_bulk(s, ops_action.id, "otto")
    with store.session() as s:
        assert s.exec(select(Review)).all() == []
        assert undoable_bulk_actions(s, "otto") == []
