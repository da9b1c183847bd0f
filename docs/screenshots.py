"""Screenshots of the console at 1440x900 on the embedded default models, for the README.

uv run python docs/screenshots.py   # writes docs/img/case_view.png, queue.png, metrics.png

A fresh store seeded as ``python -m app`` seeds it (the demo queue), the console launched with
scripts/benchmark_review.py's in-process launch (the same ``serve_options`` as the CLI), a reviewer
in Debian chromium: approve one case (``a``), flag one (``f``, a note, Ctrl+Enter), then the next
case's first screen, the queue and the Metrics tab.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_review import PASSWORD, USER, _launch  # noqa: E402

from app.services.demo import load_demo_queue  # noqa: E402
from app.ui.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from db.store import open_store  # noqa: E402
from db.users import create_user  # noqa: E402
from engine import Engine  # noqa: E402

OUT = ROOT / "docs" / "img"
SCREEN = {"width": 1440, "height": 900}


def main() -> None:
    from playwright.sync_api import expect, sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    engine = Engine.load("default-ft")
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "shots.db")
        with store.session() as s:
            create_user(s, USER, "reviewer", PASSWORD)
        load_demo_queue(store, ROOT / "data/generated/demo.jsonl")
        demo, url = _launch(engine, store, prefetch=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport=SCREEN)
                page.set_default_timeout(120_000)
                page.goto(url)
                page.locator("input[type=text]").first.fill(USER)
                page.locator("input[type=password]").first.fill(PASSWORD)
                page.get_by_role("button", name="Login").click()
                page.get_by_text(f"Signed in as {USER}").wait_for()
                shown: list[str] = []  # the case panel's text of each case opened

                def next_case() -> None:  # j, then wait for another case with both answers
                    page.keyboard.press("j")
                    if shown:
                        expect(page.locator("#case-panel")).not_to_have_text(shown[-1])
                    shown.append(page.locator("#case-panel").inner_text())
                    page.locator("#base-answer .guard").wait_for()
                    page.locator("#ft-answer .guard").wait_for()

                next_case()  # the top of the queue: approve the fine-tuned answer
                page.keyboard.press("a")
                expect(page.locator("#review-message")).to_contain_text("approved")
                next_case()  # the next: flag it with a note
                page.keyboard.press("f")
                page.keyboard.type("customer mentions a second order; check which one")
                page.keyboard.press("Control+Enter")
                expect(page.locator("#review-message")).to_contain_text("flagged")
                page.keyboard.press("Escape")
                next_case()
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / "case_view.png"))  # the first screen, as a reviewer sees it
                page.get_by_role("tab", name="Queue").click()
                page.wait_for_timeout(1500)
                page.screenshot(path=str(OUT / "queue.png"))
                page.get_by_role("tab", name="Metrics").click()
                page.wait_for_timeout(5000)
                page.screenshot(path=str(OUT / "metrics.png"), full_page=True)
                browser.close()
        finally:
            demo.close()
    print(f"wrote {OUT / 'case_view.png'}, {OUT / 'queue.png'} and {OUT / 'metrics.png'}")


if __name__ == "__main__":
    main()
