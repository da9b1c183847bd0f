"""Issue 9 in a real browser (Debian chromium via Playwright): a keyboard-only review, a bulk
approve and its undo, a saved filter applied again, a diff that shows a changed decision, and a link
that opens a case.

Model answers are seeded into the store under the tiny engine's model versions, so the console
serves them from the cache (as it would after a batch run) and these tests run no model."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlmodel import select

from db.audit import audit_entries
from db.cases import add_case, case_of, get_case, resolve_case_ref, save_run
from db.models import BulkAction, Review, SavedFilter
from policies import expected_decision
from tests.app.ui.test_browser import _login, _pick
from tests.app.ui.test_browser import page as page  # noqa: F401  (the fixture)
from tests.conftest import make_answer, make_case

pytestmark = pytest.mark.browser
PRESET_LABEL = "both models agree with the guard, no violation, no flag"


def _other(decision: str) -> str:
    return "DENY" if decision != "DENY" else "APPROVE_RETURN"


def _seed(served, engine, case_pk: int, ft_agrees: bool) -> None:
    """Store base (= the guard's decision) and fine-tuned answers for the engine's versions."""
    with served.store.session() as s:
        case = case_of(get_case(s, case_pk))
        exp = expected_decision(case).decision
        for variant, decision in (("base", exp), ("finetuned", exp if ft_agrees else _other(exp))):
            answer = make_answer(case, variant, decision)
            save_run(
                s, case_pk, dataclasses.replace(answer, model_version=engine.model_version(variant)), "otto"
            )


@pytest.fixture
def seeded(served, tiny_engine):
    """Every queued case answered (fine-tuned disagrees with the guard) plus two clean cases."""
    with served.store.session() as s:
        pks = [resolve_case_ref(s, c) for c in served.eval_case_ids + served.batch_case_ids]
        clean = [add_case(s, make_case(f"C-90000{i}"), "batch", "otto").id for i in (1, 2)]
    for pk in pks:
        _seed(served, tiny_engine, pk, ft_agrees=False)
    for pk in clean:
        _seed(served, tiny_engine, pk, ft_agrees=True)
    return served


def _case_id(page) -> str:
    text = page.locator("#case-panel").inner_text()
    return next(w for w in text.split() if w.startswith("C-"))


def test_keyboard_only_review(seeded, page):
    from playwright.sync_api import expect

    _login(page, seeded, "rita")
    page.keyboard.press("?")
    expect(page.locator("#shortcut-help-panel")).to_be_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("j")  # open the top of the queue
    page.locator("#ft-answer .guard").wait_for()
    first = _case_id(page)
    page.keyboard.press("a")  # approve fine-tuned
    expect(page.locator("#review-message")).to_contain_text("approved")
    page.keyboard.press("j")
    expect(page.locator("#case-panel")).not_to_contain_text(first)
    second = _case_id(page)
    page.keyboard.press("f")  # focuses the note; letters typed there are not shortcuts
    page.keyboard.type("just a question about returns")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-message")).to_contain_text("flagged_ambiguous")
    page.keyboard.press("Escape")
    page.keyboard.press("k")  # back to the first case
    expect(page.locator("#case-panel")).to_contain_text(first)
    page.keyboard.press("c")  # correct it: the reasoning field gets the focus
    page.keyboard.press("Control+a")
    page.keyboard.type("Checked by hand against the policy.")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-message")).to_contain_text("corrected")
    expect(page.locator("#review-diff")).to_contain_text("Differs in: reasoning")
    with seeded.store.session() as s:
        reviews = [(get_case(s, r.case_pk).case_id, r) for r in s.exec(select(Review)).all()]
    assert [(c, r.status) for c, r in reviews] == [
        (first, "approved"),
        (second, "flagged_ambiguous"),
        (first, "corrected"),
    ]
    assert {r.reviewer for _, r in reviews} == {"rita"}
    assert reviews[1][1].note == "just a question about returns"
    assert json.loads(reviews[2][1].answer_json)["reasoning"] == "Checked by hand against the policy."


def test_bulk_approve_and_undo(seeded, page):
    from playwright.sync_api import expect

    _login(page, seeded, "rita")
    page.get_by_text("Bulk actions").click()
    _pick(page, "preset", PRESET_LABEL)
    expect(page.locator("#queue-table")).not_to_contain_text(seeded.batch_case_ids[0])
    page.locator("#bulk-approve").click()
    expect(page.locator("#bulk-confirm-text")).to_contain_text("Approve the fine-tuned answer of 2 cases")
    page.locator("#bulk-confirm").click()
    expect(page.locator("#bulk-message")).to_contain_text("approved 2 cases")
    with seeded.store.session() as s:
        action = s.exec(select(BulkAction)).one()
        reviews = s.exec(select(Review)).all()
        assert {get_case(s, r.case_pk).case_id for r in reviews} == {"C-900001", "C-900002"}
        tags = [
            json.loads(e.after_json)["bulk_action_id"] for e in audit_entries(s, action="review_approved")
        ]
        assert tags == [action.id, action.id]
    page.locator("#bulk-undo").click()
    expect(page.locator("#bulk-message")).to_contain_text(f"Undid bulk action #{action.id}")
    with seeded.store.session() as s:
        assert s.exec(select(Review)).all() == []
        assert s.exec(select(BulkAction)).one().undone_by == "rita"


def test_a_saved_filter_sets_the_queue_again(seeded, page):
    """Save the current filter under a name, change the filter, apply the saved one: the widgets and
    the queue come back to it; a nameless save is refused and stores nothing."""
    from playwright.sync_api import expect

    _login(page, seeded, "rita")
    page.get_by_text("Saved filters").click()
    _pick(page, "preset", PRESET_LABEL)
    queue = page.locator("#queue-table")
    expect(queue).not_to_contain_text(seeded.batch_case_ids[0])
    expect(queue).to_contain_text("C-900001")
    page.locator("#filter-save").click()
    expect(page.locator("#filter-message")).to_contain_text("Not saved: name:")
    page.locator("#filter-name textarea").fill("clean agreements")
    page.locator("#filter-save").click()
    expect(page.locator("#filter-message")).to_contain_text("Saved filter 'clean agreements'.")
    _pick(page, "preset", "(any)")
    expect(queue).to_contain_text(seeded.batch_case_ids[0])
    _pick(page, "filter-pick", "clean agreements")
    page.locator("#filter-apply").click()
    expect(page.locator("#filter-message")).to_contain_text("Applied 'clean agreements'.")
    expect(page.locator("#preset input")).to_have_value(PRESET_LABEL)
    expect(queue).not_to_contain_text(seeded.batch_case_ids[0])
    expect(queue).to_contain_text("C-900001")
    with seeded.store.session() as s:
        saved = s.exec(select(SavedFilter)).one()
    assert (saved.owner, saved.name) == ("rita", "clean agreements")
    assert json.loads(saved.filter_json)["preset"] == "agreed_clean"


def test_link_opens_case_with_decision_diff(seeded, page):
    from playwright.sync_api import expect

    case_id = seeded.batch_case_ids[0]  # fine-tuned disagrees with base
    page.goto(f"{seeded.url}?case={case_id}")
    username, password = seeded.auth("rita")
    page.locator("input[type=text]").first.fill(username)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#case-panel")).to_contain_text(case_id)
    decision_row = page.locator("#model-diff tr[data-field=decision]")
    expect(decision_row).to_have_class("diff-changed")
    assert "decision" in page.locator("#model-diff .diff-summary").inner_text().split("Differs in:")[1]
