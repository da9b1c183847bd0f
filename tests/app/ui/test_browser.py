"""A real browser (Debian chromium via Playwright) drives the console: log in, open a queued case,
see both answers with the guard panel, flag one case, correct another, export; then check SQLite,
load the export with ``datasets`` and TRL's conversational-format check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from app.ui.browser import CHROMIUM, CHROMIUM_ARGS
from db.audit import audit_entries
from db.models import Export, ExportItem, Review

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TIMEOUT_MS = 60_000  # opening a case runs both tiny models on 2 shared cores


@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        playwright.expect.set_options(timeout=TIMEOUT_MS)  # expect() keeps its own 5 s otherwise
        yield pg
        browser.close()


def _login(page, served, user: str) -> None:
    page.goto(served.url)
    username, password = served.auth(user)
    page.locator("input[type=text]").first.fill(username)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_text(f"Signed in as {username}").wait_for()


def _pick(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} input").fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def test_review_flow_in_browser(served, page):
    from datasets import load_dataset
    from trl.data_utils import is_conversational

    flag_id, correct_id = served.batch_case_ids
    _login(page, served, "otto")
    # open a queued case by clicking its row in the queue
    page.locator("#queue-table").get_by_text(flag_id, exact=True).click()
    page.locator("#base-answer .guard").wait_for()
    page.locator("#ft-answer .guard").wait_for()
    assert "expected" in page.locator("#base-answer .guard").inner_text()
    assert flag_id in page.locator("#case-panel").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "case_view.png"), full_page=True)
    # flag it as ambiguous
    page.locator("#review-note textarea").fill("message and reason disagree")
    page.locator("#flag-case").click()
    page.locator("#review-message").get_by_text("flagged_ambiguous").wait_for()
    # correct another case: a bad correction is refused first, then a good one is saved
    page.locator("#case-ref textarea, #case-ref input").first.fill(correct_id)
    page.locator("#open-case").click()
    page.locator("#case-panel").get_by_text(correct_id).wait_for()
    page.locator("#ft-answer .guard").wait_for()
    _pick(page, "corr-decision", "DENY")
    page.locator("#corr-response textarea").fill("")
    page.locator("#save-correction").click()
    page.locator("#review-message").get_by_text("Not saved").wait_for()
    assert "customer_response" in page.locator("#review-message").inner_text()
    if page.locator("#corr-refs .remove-all").count():
        page.locator("#corr-refs .remove-all").click()
    page.locator("#corr-reasoning textarea").fill("RET-10: past the return window.")
    page.locator("#corr-response textarea").fill("We are sorry: this return is outside our window.")
    page.locator("#corr-next textarea, #corr-next input").first.fill("Close the case.")
    _pick(page, "corr-refs", "RET-10")
    page.locator("#save-correction").click()
    page.locator("#review-message").get_by_text("corrected").wait_for()
    # export: the correction cites RET-10 on a CAN-3 case (and names no item), so its consistency
    # check found issues; it is exported only with the box ticked, marked in its row
    page.get_by_role("tab", name="Export").click()
    page.locator("#export-include-inconsistent input").check()
    page.locator("#export-run").click()
    page.locator("#export-result").get_by_text("Exported").wait_for()
    assert "1 with consistency issues included" in page.locator("#export-result").inner_text()

    with served.store.session() as s:
        reviews = {r.status: r for r in s.exec(select(Review)).all()}
        assert set(reviews) == {"flagged_ambiguous", "corrected"}
        assert json.loads(reviews["corrected"].answer_json)["policy_refs"] == ["RET-10"]
        export = s.exec(select(Export)).one()
        assert export.count == 1 and export.created_by == "otto"
        assert [i.review_id for i in s.exec(select(ExportItem))] == [reviews["corrected"].id]
        assert {e.action for e in audit_entries(s, actor="otto")} >= {
            "review_flagged_ambiguous",
            "review_corrected",
            "export",
        }
    dataset = load_dataset("json", data_files=export.path, split="train")
    assert len(dataset) == 1 and is_conversational(dataset[0])
    assert [m["role"] for m in dataset[0]["messages"]] == ["system", "user", "assistant"]


def test_agent_sees_only_their_tabs_and_can_log_out(served, page):
    """An agent's page has no ops or reviewer tabs and no approve buttons; Log out ends the session."""
    _login(page, served, "ann")
    tabs = page.get_by_role("tab")
    page.get_by_role("tab", name="Queue").wait_for()
    page.wait_for_function("() => ![...document.querySelectorAll('[role=tab]')]"
                           ".some((t) => t.textContent.trim() === 'Models')")
    names = {t.strip() for t in tabs.all_inner_texts()}
    assert {"Queue", "Case", "Try a case", "Metrics"} <= names
    assert not names & {"Batch run", "Export", "Models", "Drift", "Reviews"}
    page.get_by_role("tab", name="Case", exact=True).click()
    assert page.locator("#flag-case").is_visible() and not page.locator("#approve-ft").is_visible()
    page.locator("#logout").click()
    page.get_by_role("button", name="Login").wait_for()
