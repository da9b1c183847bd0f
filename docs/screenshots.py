"""Screenshots of the console on the embedded default models, for the README.

uv run python docs/screenshots.py   # writes docs/img/case_view.png, docs/img/metrics.png

Reuses scripts/benchmark_review.py's in-process launch: a temporary store with eval-set cases, a
reviewer logs in in Debian chromium, opens cases with ``j`` and approves with ``a``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from benchmark_review import PASSWORD, USER, _fresh_store, _launch  # noqa: E402

from app.ui.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from db.cases import read_case_rows  # noqa: E402
from engine import Engine  # noqa: E402

OUT = ROOT / "docs" / "img"


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    cases = read_case_rows(ROOT / "data/generated/eval.jsonl")[:12]
    engine = Engine.load("default-ft")
    with tempfile.TemporaryDirectory() as tmp:
        store = _fresh_store(Path(tmp), "shots", cases)
        demo, url = _launch(engine, store, prefetch=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url)
                page.locator("input[type=text]").first.fill(USER)
                page.locator("input[type=password]").first.fill(PASSWORD)
                page.get_by_role("button", name="Login").click()
                page.get_by_text(f"Signed in as {USER}").wait_for()
                for _ in range(3):  # review a few by keyboard: open, approve fine-tuned
                    page.keyboard.press("j")
                    page.locator("#ft-answer .guard").wait_for()
                    page.keyboard.press("a")
                    page.wait_for_timeout(800)
                page.keyboard.press("j")
                page.locator("#base-answer .guard").wait_for()
                page.locator("#ft-answer .guard").wait_for()
                page.wait_for_timeout(500)
                page.screenshot(path=str(OUT / "case_view.png"), full_page=True)
                page.get_by_role("tab", name="Metrics").click()
                page.get_by_role("button", name="Refresh metrics").click()
                page.wait_for_timeout(5000)
                page.screenshot(path=str(OUT / "metrics.png"), full_page=True)
                browser.close()
        finally:
            demo.close()
    print(f"wrote {OUT / 'case_view.png'} and {OUT / 'metrics.png'}")


if __name__ == "__main__":
    main()
