"""Issue 18, one screen per case, in a real browser (Debian chromium via Playwright) at 1440x900: a
reviewer walks ten cases by keyboard and never scrolls; nothing typed for one case shows on the next;
the page asks no host but the console (fonts included); an agent's review keys say why they do nothing.

Model answers are seeded into the store (tests/app/ui/test_review_browser.py), so no model runs."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlmodel import select

from db.cases import add_case, case_of, find_run, get_case, resolve_case_ref, run_answer
from db.models import Review
from tests.app.ui.test_browser import _login
from tests.app.ui.test_browser import page as page  # noqa: F401  (the fixture)
from tests.app.ui.test_review_browser import _case_id, _seed
from tests.conftest import make_case

pytestmark = pytest.mark.browser
WIDTH, HEIGHT = 1440, 900
CASES = 10
# what must be on the first screen for every case, without scrolling
ON_SCREEN = (
    "#case-panel", "#base-answer", "#ft-answer", "#base-answer .guard", "#ft-answer .guard",
    "#review-note", "#approve-base", "#approve-ft", "#flag-case", "#correct-case", "#case-prev",
    "#case-next", "#review-message", "#save-correction",
)


@pytest.fixture
def screen(page):  # noqa: F811
    """The browser page at 1440x900, recording the URL of every request it makes."""
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    return page


@pytest.fixture
def ten_cases(served, tiny_engine):
    """Ten queued cases, each answered by both models (stored: the console serves them from the cache)."""
    with served.store.session() as s:
        pks = [resolve_case_ref(s, c) for c in served.eval_case_ids + served.batch_case_ids]
        pks += [add_case(s, make_case(f"C-91000{i}"), "batch", "otto").id for i in range(CASES - len(pks))]
    for i, pk in enumerate(pks):
        _seed(served, tiny_engine, pk, ft_agrees=i % 2 == 0)
    return served


def _draft(served, engine, case_id: str) -> dict:
    """The answer the correction form starts from: the fine-tuned one."""
    with served.store.session() as s:
        run = find_run(s, resolve_case_ref(s, case_id), "finetuned", engine.model_version("finetuned"))
        return run_answer(run)


def _assert_one_screen(page) -> None:
    assert page.evaluate("window.scrollY") == 0, "the page scrolled"
    for selector in ON_SCREEN:
        box = page.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not shown"
        assert 0 <= box["y"] and box["y"] + box["height"] <= HEIGHT, f"{selector} is off screen: {box}"
        assert 0 <= box["x"] and box["x"] + box["width"] <= WIDTH, f"{selector} is off screen: {box}"


def _assert_fresh_form(page, draft: dict) -> None:
    """Nothing typed for the previous case: an empty note, the correction form at this case's draft."""
    from playwright.sync_api import expect

    expect(page.locator("#review-note textarea, #review-note input").first).to_have_value("")
    expect(page.locator("#corr-reasoning textarea")).to_have_value(draft["reasoning"])
    expect(page.locator("#corr-response textarea")).to_have_value(draft["customer_response"])
    expect(page.locator("#corr-next textarea, #corr-next input").first).to_have_value(draft["next_action"])
    expect(page.locator("#corr-decision input")).to_have_value(draft["decision"])
    for ref in draft["policy_refs"]:
        expect(page.locator("#corr-refs")).to_contain_text(ref)


def test_ten_cases_by_keyboard_on_one_screen(ten_cases, tiny_engine, screen):
    from playwright.sync_api import expect

    page = screen
    _login(page, ten_cases, "rita")
    page.get_by_role("tab", name="Case").first.click()  # before any case: it says how to open one
    expect(page.locator("#case-panel")).to_contain_text("No case open")
    seen: list[str] = []
    for i in range(CASES):
        page.keyboard.press("j")
        expect(page.locator("#case-panel")).not_to_contain_text(seen[-1] if seen else "No case open")
        page.locator("#base-answer .guard").wait_for()
        page.locator("#ft-answer .guard").wait_for()
        case_id = _case_id(page)
        seen.append(case_id)
        for panel in ("#base-answer", "#ft-answer"):
            assert "expected" in page.locator(f"{panel} .guard").inner_text()
        _assert_one_screen(page)
        _assert_fresh_form(page, _draft(ten_cases, tiny_engine, case_id))
        message = page.locator("#review-message")
        if i % 4 == 0:
            page.keyboard.press("a")
            expect(message).to_contain_text("approved")
        elif i % 4 == 1:
            page.keyboard.press("f")
            page.keyboard.type(f"note for {case_id}")
            page.keyboard.press("Control+Enter")
            expect(message).to_contain_text("flagged_ambiguous")
            page.keyboard.press("Escape")
        elif i % 4 == 2:
            if i == 6:  # the form folded by hand: c opens it again
                page.locator("#correction-form .label-wrap").click()
                expect(page.locator("#corr-reasoning textarea")).to_be_hidden()
            page.keyboard.press("c")
            expect(page.locator("#corr-reasoning textarea")).to_be_focused()
            page.keyboard.press("Control+a")
            page.keyboard.type(f"Checked {case_id} by hand.")
            page.keyboard.press("Control+Enter")
            expect(message).to_contain_text("corrected")
            page.keyboard.press("Escape")
        _assert_one_screen(page)  # the saved message is in view too
    assert len(set(seen)) == CASES, seen

    with ten_cases.store.session() as s:
        reviews = {get_case(s, r.case_pk).case_id: r for r in s.exec(select(Review)).all()}
    assert {c: r.status for c, r in reviews.items()} == {
        c: ("approved", "flagged_ambiguous", "corrected")[i % 4] for i, c in enumerate(seen) if i % 4 < 3
    }
    for i, c in enumerate(seen):  # each note and correction went to its own case only
        if i % 4 == 1:
            assert reviews[c].note == f"note for {c}"
        if i % 4 == 2:
            assert f"Checked {c} by hand." in reviews[c].answer_json

    # back to the queue: it shows the reviews just saved, never the list from before them
    page.get_by_role("tab", name="Queue").click()
    expect(page.locator("#queue-counts")).to_contain_text(f"{sum(i % 4 == 1 for i in range(CASES))} flagged")
    expect(page.locator("#queue-table")).to_contain_text("flagged_ambiguous")

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(ten_cases.url))
    foreign = [u for u in page.requests if not u.startswith((origin + "/", "data:", "blob:"))]
    assert not foreign, foreign
    assert any("/static/fonts/" in u for u in page.requests)  # the fonts come from the console itself
    # the text font has true regular and bold faces, so bold capitals stay in the same font
    assert page.evaluate("document.fonts.check('700 16px \"Source Sans Pro\"')")
    assert page.evaluate("document.fonts.check('400 16px \"Source Sans Pro\"')")
    weights = page.evaluate(
        "[...document.fonts].filter((f) => f.family.includes('Source Sans Pro') && f.status === 'loaded')"
        ".map((f) => f.weight)"
    )
    assert {"400", "700"} <= set(weights)


def test_agent_review_keys_say_the_role_cannot(ten_cases, screen):
    """An agent's approve and correct buttons are hidden: a, b, c and Ctrl+Enter say why nothing
    happens; f (flag) works as for anyone."""
    from playwright.sync_api import expect

    page = screen
    _login(page, ten_cases, "ann")
    page.keyboard.press("j")
    page.locator("#ft-answer .guard").wait_for()
    refusal = page.locator("#shortcut-refusal")
    for key, verb in (("a", "approve"), ("b", "approve"), ("c", "correct"), ("Control+Enter", "correct")):
        page.evaluate("document.getElementById('shortcut-refusal').textContent = ''")
        page.keyboard.press(key)
        expect(refusal).to_have_text(f"Your role (agent) cannot {verb} this case.")
        assert refusal.bounding_box()["y"] < HEIGHT
    page.keyboard.press("f")
    page.keyboard.type("customer asks two things")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#review-message")).to_contain_text("flagged_ambiguous")
    expect(refusal).to_have_text("")
    with ten_cases.store.session() as s:
        review = s.exec(select(Review)).one()  # the flag only: the refused keys saved nothing
        assert (review.status, review.reviewer) == ("flagged_ambiguous", "ann")
        assert case_of(get_case(s, review.case_pk)).case_id == _case_id(page)
