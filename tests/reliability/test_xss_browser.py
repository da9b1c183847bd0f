"""XSS in a real browser (Debian chromium via Playwright): a customer message and model outputs
full of markup are shown as literal text and run no script."""

from __future__ import annotations

import pytest

from app.services.answers import engine_versions
from db.cases import add_case, save_run
from engine.types import ModelAnswer
from policies import parse_case
from tests.app.ui.test_browser import _login, page  # noqa: F401
from tests.conftest import tiny_cases

pytestmark = pytest.mark.browser
IMG = "<img src=x onerror=window.__xss=1>"
SCRIPT = "<script>window.__xss=2</script>"
PAYLOAD = f"Hi {IMG} and {SCRIPT} <b>bold</b> [link](javascript:window.__xss=3)"


def _hostile_case(served, tiny_engine) -> str:
    data = {**tiny_cases()[2], "case_id": "C-XSS001", "message": PAYLOAD}
    data["order"] = {**data["order"], "item": f"Lamp {IMG}"}
    case = parse_case(data)
    versions = engine_versions(tiny_engine)
    answer = {
        "decision": "DENY",
        "reasoning": f"RET-10 {IMG}",
        "customer_response": f"Sorry {SCRIPT}",
        "next_action": "Close.",
        "policy_refs": ["RET-10"],
    }
    with served.store.session() as s:
        pk = add_case(s, case, "try", "otto").id
        for variant, version in versions.items():
            ok = variant != "base"  # base: an invalid answer, shown as its raw text
            save_run(s, pk, ModelAnswer(
                case.case_id, variant, version, "ok" if ok else "invalid", f"raw {IMG} {SCRIPT}",
                answer if ok else None, None if ok else f"bad {IMG}", 0.1, 10, 10, False,
            ), "otto")
    return case.case_id


def test_markup_in_case_and_answers_is_inert(served, tiny_engine, page):  # noqa: F811
    case_id = _hostile_case(served, tiny_engine)
    _login(page, served, "otto")
    page.get_by_role("tab", name="Case").first.click()
    page.locator("#case-ref textarea, #case-ref input").first.fill(case_id)
    page.locator("#open-case").click()
    page.locator("#case-panel").get_by_text(case_id).wait_for()
    page.locator("#ft-answer .guard").wait_for()
    page.wait_for_timeout(500)  # give any injected onerror a chance to fire
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert IMG in page.locator("#case-panel").inner_text()
    assert SCRIPT in page.locator("#case-panel").inner_text()
    assert IMG in page.locator("#ft-answer").inner_text()
    assert SCRIPT in page.locator("#ft-answer").inner_text()
    assert IMG in page.locator("#base-answer").inner_text()
    for panel in ("#case-panel", "#ft-answer", "#base-answer"):
        assert page.locator(f"{panel} img[src=x], {panel} script").count() == 0
