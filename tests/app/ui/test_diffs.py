"""Diffs escape everything and mark what changed."""

from __future__ import annotations

import re

from app.ui.diffs import changed_fields, correction_diff_html, model_diff_html, word_diff_html

BASE = {
    "decision": "APPROVE_RETURN",
    "reasoning": "RET-01: within 30 days.",
    "customer_response": "We will refund you <script>alert(1)</script>",
    "next_action": "Send a label.",
    "policy_refs": ["RET-01"],
}


def test_word_diff_marks_words_and_escapes():
    html = word_diff_html("we will refund <b>you</b>", "we cannot refund <b>you</b>")
    assert "<del" in html and ">will</del>" in html and ">cannot</ins>" in html
    assert "&lt;b&gt;you&lt;/b&gt;" in html and "<b>" not in html


def test_model_diff_highlights_changed_decision():
    ft = {**BASE, "decision": "DENY", "customer_response": "We cannot refund you <script>alert(1)</script>"}
    assert changed_fields(BASE, ft) == ["decision", "customer_response"]
    html = model_diff_html(BASE, ft)
    assert "<tr data-field='decision' class='diff-changed'>" in html
    assert "<tr data-field='reasoning'>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "no valid answer" in model_diff_html(None, ft)


def test_correction_diff_names_reviewer_escaped():
    html = correction_diff_html(BASE, {**BASE, "next_action": "Close."}, "<rita>", 7)
    assert "Correction #7 by &lt;rita&gt;" in html and "Differs in: next_action" in html


def test_word_diff_keeps_replaced_words_apart():
    """A replaced word reads as two words once the tags are gone ("is your", not "isyour")."""
    text = re.sub(r"<[^>]+>", "", word_diff_html("this is order", "this your order"))
    assert text == "this is your order"
