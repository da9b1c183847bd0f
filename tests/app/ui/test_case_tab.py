"""Case tab handlers, called as the page calls them: per-case inputs never carry over between cases."""

from __future__ import annotations

import gradio as gr

from app.ui.case_tab import create_case_tab
from app.ui.shortcuts import OPEN_CORRECTION_JS
from app.ui.state import Console
from db.cases import add_case
from tests.app.services.test_navigation import CountingEngine
from tests.conftest import make_case


def test_note_and_form_reset_when_the_case_changes(store) -> None:
    """f, a note, Ctrl+Enter; then the next case: its note is empty (the issue's leaked flag note), and
    a saved correction stays in the form until another case is opened."""
    with store.session() as s:
        first, second = (add_case(s, make_case(f"C-30000{i}"), "batch", "otto").id for i in range(2))
    with gr.Blocks():
        tab = create_case_tab(Console(engine=CountingEngine(), store=store, prefetch=False))
    w, rita = tab.widgets, gr.Request(username="rita", session_hash="s1")

    tab.open(first, rita)
    flagged = tab.act("flag")(first, "the customer asks two things", None, "", "", "", None, rita)
    assert "Saved review" in flagged[w.status_msg] and flagged[w.note] == ""
    opened = tab.open(second, rita)
    assert opened[w.note] == "" and opened[w.status_msg] == ""

    corrected = {"decision": "DENY", "reasoning": "RET-10: no receipt.", "customer_response": "Sorry.",
                 "next_action": "Close the case.", "policy_refs": ["RET-10"]}
    saved = tab.act("correct")(second, "", *corrected.values(), rita)
    assert "Saved review" in saved[w.status_msg], saved[w.status_msg]
    assert [saved[c] for c in (w.decision, w.reasoning, w.customer_response, w.next_action, w.refs)] == \
        list(corrected.values())  # what was saved, not the model's answer again
    back = tab.open(first, rita)
    assert back[w.reasoning] != corrected["reasoning"] and back[w.note] == ""


def test_review_buttons_are_gated_and_correct_only_opens_the_form(store) -> None:
    """Each review button is shown only to roles allowed its action; the action bar's "Correct the
    answer" runs no handler: like the c key, it opens the form and focuses the reasoning in the page."""
    with gr.Blocks() as demo:
        tab = create_case_tab(Console(engine=CountingEngine(), store=store, prefetch=False))
    assert {block.elem_id: need for block, need in tab.gated} == {
        "approve-base": "approve", "approve-ft": "approve", "flag-case": "flag",
        "correction-form": "correct", "correct-case": "correct",
    }
    button = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "correct-case")
    deps = [d for d in demo.fns.values() if (button._id, "click") in [tuple(t) for t in d.targets]]
    assert len(deps) == 1 and deps[0].fn is None and deps[0].js == OPEN_CORRECTION_JS
