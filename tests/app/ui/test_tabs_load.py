"""Issue 18: no empty or stale screens. The Metrics, Drift, Reviews and Batch run tabs load their
figures when opened (``Tab.select``), never show a placeholder table, and say so when there is nothing
yet; a tab hidden from a role loads nothing and refuses nothing. The queue shows its counts and its
priority columns at 1440 px; a bulk approve that selects nothing says why. Handlers are called as the
page calls them, then a real browser opens each tab."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr
import pandas as pd
import pytest

from app.ui.interface import build_app
from db.cases import add_case
from tests.app.ui.test_browser import ARTIFACTS, _login
from tests.app.ui.test_browser import page as page  # noqa: F401  (the fixture)
from tests.conftest import make_case


def _request(user: str | None) -> SimpleNamespace:
    return SimpleNamespace(username=user, query_params={}, headers={}, session_hash=f"s-{user}")


def _on_open(demo: gr.Blocks, label: str) -> tuple[Any, list[Any]]:
    """The handler the page runs when the tab ``label`` is opened, and its outputs."""
    tab = next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.label == label)
    dep = next(d for d in demo.fns.values() if (tab._id, "select") in [tuple(t) for t in d.targets])
    return dep.fn, list(dep.outputs)


def _tables(updates: dict[Any, Any]) -> list[pd.DataFrame]:
    return [v for v in updates.values() if isinstance(v, pd.DataFrame)]


@pytest.fixture
def demo(store, tmp_path) -> gr.Blocks:
    with store.session() as s:
        add_case(s, make_case("C-900001"), "batch", "otto")
    return build_app(None, store, export_dir=tmp_path / "exports", batch_root=tmp_path, prefetch=False)


@pytest.mark.parametrize(
    ("label", "says"),
    [
        ("Metrics", "No model runs yet"),
        ("Drift", "1 recent case."),
        ("Reviews", "No reviews yet"),
        ("Batch run", "No batch runs yet"),
    ],
)
def test_each_tab_loads_when_opened(demo, label: str, says: str) -> None:
    show, outputs = _on_open(demo, label)
    updates = show(request=_request("otto"))
    assert set(updates) <= set(outputs) and updates
    text = " ".join(v for v in updates.values() if isinstance(v, str))
    assert says in text
    for table in _tables(updates):  # real headers, never Gradio's "1 2 3" placeholder
        assert len(table.columns) > 1 and not {"1", "2", "3"} & {str(c) for c in table.columns}


def test_a_hidden_tab_loads_nothing_and_refuses_nothing(demo) -> None:
    """An agent never sees Drift, Reviews or Batch run: opening one (were it possible) changes
    nothing and raises nothing. The agent's Metrics tab loads."""
    for label in ("Drift", "Reviews", "Batch run"):
        show, outputs = _on_open(demo, label)
        updates = show(request=_request("ann"))
        assert list(updates) == outputs
        assert all(isinstance(v, dict) and v.get("__type__") == "update" and len(v) == 1
                   for v in updates.values()), updates
    show, _ = _on_open(demo, "Metrics")
    assert _tables(show(request=_request("ann")))


def test_bulk_approve_with_nothing_selected_says_why(demo) -> None:
    ask = next(d.fn for d in demo.fns.values() if d.fn is not None and d.fn.__name__ == "ask")
    updates = ask("(any)", "(any)", "(any)", "(any)", False, "agreed_clean", request=_request("otto"))
    message = next(v for v in updates.values() if isinstance(v, str) and v.startswith("Nothing to approve"))
    assert "No case matches the preset 'both models agree with the guard" in message
    assert "when a case is opened, or by a batch run" in message


@pytest.mark.browser
def test_tabs_load_in_browser_and_the_queue_reads_at_a_glance(served, page) -> None:
    """At 1440 px: the queue's counts line and its priority columns in view, headers on one line;
    each tab opened shows its tables with real headers and a sentence where there is nothing yet."""
    page.set_viewport_size({"width": 1440, "height": 900})
    _login(page, served, "otto")
    page.locator("#queue-counts").get_by_text("5 matching").wait_for()
    for header in ("#", "case", "prio.", "viol.", "flags", "disagree"):
        cell = page.locator("#queue-table th").filter(has_text=header).first
        box = cell.bounding_box()
        assert box and box["x"] + box["width"] <= 1440 and box["height"] < 60, (header, box)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "queue_1440.png"))
    for tab, element, text in (
        ("Metrics", "#metrics-models-note", "No model runs yet"),
        ("Reviews", "#audit-log", "No reviews yet"),
        ("Drift", "#drift-notes", "2 recent cases"),
        ("Batch run", "#batch-summary", "No batch runs yet"),
    ):
        page.get_by_role("tab", name=tab, exact=True).click()
        page.locator(element).get_by_text(text).first.wait_for()
        page.screenshot(path=str(ARTIFACTS / f"tab_{tab.split()[0].lower()}.png"), full_page=True)
    page.get_by_role("tab", name="Metrics", exact=True).click()
    headers = page.locator("#metrics-models th").all_inner_texts()
    assert any("decision accuracy" in h for h in headers), headers


def test_export_and_queue_tabs_load_when_opened(demo, store) -> None:
    """The Export tab shows its past exports with real headers (none yet) when opened; going back
    to the Queue shows what changed meanwhile (a case added after the page loaded)."""
    show, outputs = _on_open(demo, "Export")
    (table,) = _tables(show(request=_request("otto")))
    assert list(table.columns) == ["#", "created_at", "by", "count", "path", "sha256"] and table.empty
    assert [v.get("__type__") for v in show(request=_request("ann")).values()] == ["update"]  # hidden
    with store.session() as s:
        add_case(s, make_case("C-900002"), "batch", "otto")
    show, outputs = _on_open(demo, "Queue")
    updates = show("(any)", "(any)", "(any)", "(any)", False, "(any)", request=_request("otto"))
    (queue,) = _tables(updates)
    assert {"C-900001", "C-900002"} <= set(queue["case"])
    assert any("**2** matching" in v for v in updates.values() if isinstance(v, str))
