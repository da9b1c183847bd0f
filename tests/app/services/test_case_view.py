"""The case view as a use case: what one viewer sees of a case, and where a correction starts."""

from __future__ import annotations

import pytest

from app.services.case_view import case_view
from app.services.reviews import submit_review
from app.services.second_opinion import set_second_opinion_share
from db.cases import add_case, save_run
from db.shadow import SHADOW_VARIANT
from db.users import create_user
from policies import expected_decision
from tests.conftest import make_answer, make_case


def _case_with_runs(store, case_id: str = "C-000123"):
    """A case whose base answer is the guard's decision and whose fine-tuned answer is not."""
    case = make_case(case_id)
    exp = expected_decision(case).decision
    other = "DENY" if exp != "DENY" else "APPROVE_RETURN"
    with store.session() as s:
        pk = add_case(s, case, "batch", "otto").id
        runs = {
            "base": save_run(s, pk, make_answer(case, "base", exp), "otto"),
            "finetuned": save_run(s, pk, make_answer(case, "finetuned", other), "otto"),
        }
    return pk, runs, exp, other


def test_draft_starts_from_the_finetuned_answer_never_the_guards(store):
    pk, runs, exp, other = _case_with_runs(store)
    view = case_view(store, pk, runs, "rita")
    assert view.case.case_id == "C-000123" and view.record.id == pk
    # the base answer is the guard's decision, yet the form starts from the fine-tuned one
    assert view.start is not None and view.start.id == runs["finetuned"].id
    assert view.draft["decision"] == other != exp
    assert view.answer("base")["decision"] == exp
    assert (view.status, view.correction, view.shadow) == ("pending", None, None)
    # a correction records the fine-tuned answer as the one it replaced
    corrected = {**view.answer("finetuned"), "decision": exp}
    with store.session() as s:
        review = submit_review(s, pk, "correct", "rita", runs=runs, answer=corrected)
    assert review.model_run_id == runs["finetuned"].id
    # an invalid fine-tuned answer: an empty form (not the base answer), still replacing that run
    with store.session() as s:
        case = make_case("C-000124")
        pk2 = add_case(s, case, "batch", "otto").id
        invalid = {"finetuned": save_run(s, pk2, make_answer(case, "finetuned", None), "otto"),
                   "base": save_run(s, pk2, make_answer(case, "base", exp), "otto")}
    empty = case_view(store, pk2, invalid, "rita")
    assert empty.start is invalid["finetuned"] and empty.draft == {}


def test_shadow_answer_is_shown(store):
    pk, runs, exp, _ = _case_with_runs(store)
    case = make_case()
    with store.session() as s:
        shadow = save_run(s, pk, make_answer(case, SHADOW_VARIANT, exp), "otto")
    view = case_view(store, pk, runs, "rita")
    assert view.shadow is not None and view.shadow.id == shadow.id
    assert set(view.runs) == {"base", "finetuned"}


def test_second_opinion_viewer_does_not_see_another_reviewers_verdict(store):
    with store.session() as s:
        create_user(s, "rex", "reviewer", "review-pass-2")
        set_second_opinion_share(s, "otto", 1.0)
    pk, runs, exp, _ = _case_with_runs(store)
    corrected = {**make_answer(make_case(), "finetuned", exp).answer, "reasoning": "Checked by hand."}
    with store.session() as s:
        submit_review(s, pk, "correct", "rita", runs=runs, answer=corrected)
    own = case_view(store, pk, runs, "rita")
    assert own.status == "corrected"
    assert own.correction is not None and own.correction.corrected["reasoning"] == "Checked by hand."
    other = case_view(store, pk, runs, "rex")
    assert (other.status, other.correction) == ("pending", None)
    with store.session() as s:  # once rex has reviewed too, both verdicts are visible
        submit_review(s, pk, "flag", "rex", runs=runs, note="unclear")
    after = case_view(store, pk, runs, "rex")
    assert after.status == "flagged_ambiguous" and after.correction is not None


def test_unknown_case_names_the_field(store):
    with pytest.raises(KeyError, match="case_id"):
        case_view(store, 999, {}, "rita")


def test_each_answer_shows_its_consistency_check_before_anyone_approves(store):
    """Issue 18: the reviewer sees the training-data check of each answer before approving it: the
    base answer (the rule engine's whole answer) passes, the fine-tuned one (another decision, the
    same text) does not; an answer that is not valid JSON is not checked."""
    from app.ui.render import answer_html

    pk, runs, exp, other = _case_with_runs(store)
    view = case_view(store, pk, runs, "rita")
    assert view.consistency("base") == []
    issues = view.consistency("finetuned")
    assert issues and {i.code for i in issues} & {"refs_contradict_decision", "next_action_mismatch"}
    assert "Consistency: ok" in answer_html("Base", runs["base"], view.consistency("base"))
    card = answer_html("Fine-tuned", runs["finetuned"], issues)
    assert f"Consistency: {len(issues)} issue" in card and issues[0].message.split()[0] in card
    assert card.index("class='guard'") < card.index("class='consistency'") < card.index("<dl>")
    with store.session() as s:
        case = make_case("C-000125")
        pk2 = add_case(s, case, "batch", "otto").id
        invalid = {"finetuned": save_run(s, pk2, make_answer(case, "finetuned", None), "otto")}
    assert case_view(store, pk2, invalid, "rita").consistency("finetuned") is None
    assert "Consistency" not in answer_html("Fine-tuned", invalid["finetuned"], None)
