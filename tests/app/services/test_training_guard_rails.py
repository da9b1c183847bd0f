"""Guard rails on training data (issue 18), on a real SQLite store: an approved or corrected answer is
checked for consistency when saved (recorded, never refused); the export skips inconsistent answers and
counts them, or exports them marked when asked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from app.services.exports import export_reviews
from app.services.reviews import submit_review
from db.cases import add_case, runs_for_case, save_run
from db.reviews import add_review
from db.store import Store
from policies.synth_text import reference_answer
from tests.conftest import make_answer, make_case

# The fine-tuned model's answer that reached training data before issue 18, on a RET-11 case.
GARBLED = {"decision": "APPROVE_REFUND_WITH_FEE",
           "reasoning": "RET-11: opened that that that that is already that that that that delivered.",
           "customer_response": "reasoning warranty delivered. ); UK, w of an order",
           "next_action": "reasoning", "policy_refs": ["RET-11"]}


def _case_with_garbled_run(store: Store, case_id: str) -> tuple[int, dict]:
    case = make_case(case_id)
    garbled = dataclasses.replace(make_answer(case, "finetuned", GARBLED["decision"]), answer=GARBLED)
    with store.session() as s:
        pk = add_case(s, case, "try", "ann").id or 0
        save_run(s, pk, garbled, "ann")
        return pk, runs_for_case(s, pk)


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_an_inconsistent_answer_is_saved_with_its_issues(store: Store):
    garbled_pk, garbled_runs = _case_with_garbled_run(store, "C-GR1")
    case = make_case("C-OK1")
    with store.session() as s:
        ok_pk = add_case(s, case, "try", "ann").id or 0
        approved = submit_review(s, garbled_pk, "approve_finetuned", "rita", runs=garbled_runs)
        corrected = submit_review(s, ok_pk, "correct", "rita", runs={},
                                  answer=reference_answer(case).model_dump(mode="json"))
        flagged = submit_review(s, ok_pk, "flag", "rita", runs={}, note="second look")
        assert approved.status == "approved"  # saved all the same
        codes = [i["code"] for i in approved.consistency_issues or []]
        assert {"item_not_named", "next_action_mismatch", "repeated_fragment", "garbled_text"} <= set(codes)
        assert all(i["message"] for i in approved.consistency_issues or [])
        assert corrected.consistency_issues == []  # checked, consistent
        assert flagged.consistency_issues is None  # nothing to check


def test_export_skips_inconsistent_answers_unless_included(store: Store, tmp_path: Path):
    garbled_pk, garbled_runs = _case_with_garbled_run(store, "C-GR2")
    legacy_case, ok_case = make_case("C-LEG"), make_case("C-OK2")
    with store.session() as s:
        bad = submit_review(s, garbled_pk, "approve_finetuned", "rita", runs=garbled_runs).id
        legacy_pk = add_case(s, legacy_case, "try", "ann").id or 0
        # a review saved before the check (or by a bulk approval): nothing recorded, checked at export
        legacy = add_review(s, legacy_pk, "approved", "rita", answer={**GARBLED, "policy_refs": ["RET-3"]}).id
        ok_pk = add_case(s, ok_case, "try", "ann").id or 0
        good = submit_review(s, ok_pk, "correct", "rita", runs={},
                             answer=reference_answer(ok_case).model_dump(mode="json")).id
    with store.session() as s:
        first = export_reviews(s, "otto", tmp_path / "exports")
    assert first.review_ids == [good] and first.marked == []
    assert first.skipped == {"inconsistent": [bad, legacy]}
    assert "consistency_issues" not in _rows(first.path)[0]
    manifest = json.loads(Path(first.manifest_path).read_text())
    assert manifest["consistency"] == {"include_inconsistent": False, "skipped": 2, "marked": 0,
                                       "marked_review_ids": []}
    with store.session() as s:
        second = export_reviews(s, "otto", tmp_path / "exports", include_inconsistent=True)
    assert second.review_ids == [bad, legacy] and second.marked == [bad, legacy] and not second.skipped
    rows = _rows(second.path)
    assert "garbled_text" in rows[0]["consistency_issues"]
    assert "refs_not_expected" in rows[1]["consistency_issues"]
    manifest = json.loads(Path(second.manifest_path).read_text())
    assert manifest["consistency"]["marked"] == 2 and manifest["consistency"]["include_inconsistent"]
