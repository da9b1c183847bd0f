"""Issue 17, finding 4: blinding by role. Only reviews by reviewers and above are opinions; an
agent's flag is a signal that never counts as the first or second opinion, never lifts the blinding
of the first review, and never enters the kappa pairs or the adjudication queue."""

from __future__ import annotations

import pytest

from app.services.case_view import case_view
from app.services.queue import QueueFilter, queue_rows
from app.services.review_log import latest_correction, review_log
from app.services.reviews import submit_review
from app.services.second_opinion import (
    adjudication_queue,
    gives_opinions,
    inter_reviewer_agreement,
    opinion_pairs,
    set_second_opinion_share,
    visible_reviews,
    visible_status,
)
from db.cases import runs_for_case
from db.users import create_user
from policies import expected_decision
from tests.app.services.test_review_throughput import _add
from tests.conftest import make_case

RITA_NOTE = "rita: the receipt is missing, so RET-10 denies it"


def _other_decision(case_id: str) -> str:
    return "DENY" if expected_decision(make_case(case_id)).decision != "DENY" else "APPROVE_RETURN"


def _rita_corrects(store, pk: int, case_id: str) -> None:
    answer = {
        "decision": _other_decision(case_id),
        "reasoning": "RET-10 applies.",
        "customer_response": "Sorry, we cannot do this.",
        "next_action": "Close the case.",
        "policy_refs": ["RET-10"],
    }
    with store.session() as s:
        submit_review(s, pk, "correct", "rita", runs=runs_for_case(s, pk), answer=answer, note=RITA_NOTE)


def _review(store, pk: int, who: str, action: str, note: str = "") -> None:
    with store.session() as s:
        submit_review(s, pk, action, who, runs=runs_for_case(s, pk), note=note)


@pytest.fixture
def double(store):
    """The shared store with a second reviewer (rex) and every case reviewed twice."""
    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
        set_second_opinion_share(s, "otto", 1.0)
    return store


def _queue_status(store, pk: int, viewer: str) -> str:
    with store.session() as s:
        return next(r.status for r in queue_rows(s, QueueFilter(), None, viewer) if r.case_pk == pk)


def _no_agent_anywhere(store) -> None:
    with store.session() as s:
        pairs = opinion_pairs(s)
        queue = adjudication_queue(s)
    assert all("ann" not in (p.first.reviewer, p.second.reviewer) for p in pairs)
    assert "ann" not in set(queue["first"]) | set(queue["second"])


def test_roles_that_give_opinions():
    assert [gives_opinions(r) for r in ("agent", "reviewer", "ops", None, "admin")] == [
        False, True, True, False, False,
    ]  # fmt: skip


def test_an_agents_flag_does_not_unlock_the_first_review(double):
    store = double
    pk = _add(store, "C-100001")
    _rita_corrects(store, pk, "C-100001")
    _review(store, pk, "ann", "flag", note="ann: the customer asks for two things")
    with store.session() as s:
        assert visible_reviews(s, pk, "rex") == []
        assert visible_status(s, pk, "rex") == "pending"
        assert latest_correction(s, pk, "rex") is None
        log = review_log(s, "rex")
        assert [r.reviewer for r in visible_reviews(s, pk, "rita")] == ["rita"]  # each their own
        assert [r.reviewer for r in visible_reviews(s, pk, "ann")] == ["ann"]
        runs = runs_for_case(s, pk)
    assert all(e.actor != "rita" and e.correction is None for e in log)
    view = case_view(store, pk, runs, "rex")
    assert view.status == "pending" and view.correction is None
    statuses = {v: _queue_status(store, pk, v) for v in ("rex", "otto", "rita", "ann")}
    assert statuses == {"rex": "pending", "otto": "pending", "rita": "corrected", "ann": "flagged_ambiguous"}
    with store.session() as s:
        assert opinion_pairs(s) == [] and adjudication_queue(s).empty
        assert inter_reviewer_agreement(s).empty

    _review(store, pk, "rex", "approve_finetuned")  # the second opinion: now both are in
    with store.session() as s:
        assert [r.reviewer for r in visible_reviews(s, pk, "rex")] == ["rita", "ann", "rex"]
        assert [r.note for r in visible_reviews(s, pk, "rex")][0] == RITA_NOTE
        correction = latest_correction(s, pk, "rex")
        assert correction is not None and correction.reviewer == "rita"
        assert visible_status(s, pk, "rex") == visible_status(s, pk, "rita") == "approved"
        pairs = opinion_pairs(s)
        assert [(p.first.reviewer, p.second.reviewer) for p in pairs] == [("rita", "rex")]
        queue = adjudication_queue(s)
        assert list(queue.case_pk) == [pk]
        assert (queue.first[0], queue.second[0]) == ("rita", "rex")
        overall = inter_reviewer_agreement(s).iloc[0]
        assert overall.scope == "overall" and overall.n == 1
    assert {v: _queue_status(store, pk, v) for v in ("rex", "ann")} == {"rex": "approved", "ann": "approved"}

    _review(store, pk, "ann", "flag", note="ann: still unsure")  # an agent does not adjudicate
    with store.session() as s:
        assert list(adjudication_queue(s).case_pk) == [pk]
    _no_agent_anywhere(store)
    _review(store, pk, "otto", "approve_finetuned")  # ops does
    with store.session() as s:
        assert adjudication_queue(s).empty


def test_an_agents_flag_first_is_not_the_first_opinion(double):
    """ann flags before any reviewer: the pair is still (rita, rex), and rita's review stays hidden
    from rex until he has reviewed."""
    store = double
    pk = _add(store, "C-100002")
    _review(store, pk, "ann", "flag", note="ann: two requests in one")
    _review(store, pk, "rita", "flag", note=RITA_NOTE)
    with store.session() as s:
        assert visible_reviews(s, pk, "rex") == [] and visible_status(s, pk, "rex") == "pending"
        assert opinion_pairs(s) == []
    _review(store, pk, "rex", "approve_finetuned")
    with store.session() as s:
        assert [r.reviewer for r in visible_reviews(s, pk, "rex")] == ["ann", "rita", "rex"]
        assert [(p.first.reviewer, p.second.reviewer) for p in opinion_pairs(s)] == [("rita", "rex")]
        queue = adjudication_queue(s)
        assert list(queue.first_verdict) == ["FLAG"] and list(queue.second) == ["rex"]
    _no_agent_anywhere(store)


def test_kappa_counts_reviewer_pairs_only(double):
    """Two agents' flags next to one reviewer make no pair; the kappa counts only the case two
    reviewers have reviewed."""
    store = double
    with store.session() as s:
        create_user(s, "abe", "agent", "agent-pass-2")
    only_agents = _add(store, "C-100003")
    _review(store, only_agents, "rita", "approve_finetuned")
    _review(store, only_agents, "ann", "flag", note="ann: unclear")
    _review(store, only_agents, "abe", "flag", note="abe: unclear")
    paired = _add(store, "C-100004")
    _review(store, paired, "rita", "approve_finetuned")
    _review(store, paired, "rex", "approve_finetuned")
    with store.session() as s:
        assert [p.case_pk for p in opinion_pairs(s)] == [paired]
        overall = inter_reviewer_agreement(s).iloc[0]
        assert adjudication_queue(s).empty
        assert visible_status(s, only_agents, "rex") == "pending"  # still waiting for its second opinion
    assert overall.n == 1 and overall.agreement == pytest.approx(1.0)
    _no_agent_anywhere(store)


def test_an_agents_flag_is_a_signal_on_an_ordinary_case(store):
    """Without second opinions an agent's flag is the case's status for everyone, as before."""
    pk = _add(store, "C-100005")
    _review(store, pk, "ann", "flag", note="ann: the customer asks for two things")
    with store.session() as s:
        assert [r.reviewer for r in visible_reviews(s, pk, "rita")] == ["ann"]
        assert visible_status(s, pk, "rita") == "flagged_ambiguous"
        assert opinion_pairs(s) == []
    assert {v: _queue_status(store, pk, v) for v in ("rita", "otto")} == {
        "rita": "flagged_ambiguous",
        "otto": "flagged_ambiguous",
    }
