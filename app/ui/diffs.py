"""Diffs for the case view and the audit log: base vs fine-tuned, and a correction vs the model
answer it started from. Pure functions of two answers (no store, no engine); every string is
escaped with :func:`html.escape` before it becomes markup.

Short fields (decision, policy refs, next action) are highlighted whole where they differ; the
long ones (reasoning, customer response) get a word-level diff (:mod:`difflib`).
"""

from __future__ import annotations

import difflib
import re
from html import escape
from typing import Any

WHOLE_FIELDS = (("decision", "Decision"), ("policy_refs", "Policy refs"), ("next_action", "Next action"))
WORD_FIELDS = (("reasoning", "Reasoning"), ("customer_response", "Customer response"))
DEL_STYLE = "background:#fee2e2;color:#991b1b;text-decoration:line-through"
INS_STYLE = "background:#dcfce7;color:#166534;text-decoration:none"
CHANGED_STYLE = "background:#fef3c7;font-weight:600"


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def word_diff_html(old: str, new: str) -> str:
    """``new`` against ``old`` word by word: removed words in <del>, added in <ins>, all escaped."""
    a, b = re.split(r"(\s+)", old or ""), re.split(r"(\s+)", new or "")
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del style='{DEL_STYLE}'>{escape(''.join(a[i1:i2]))}</del>")
        if i2 > i1 and j2 > j1:  # a replacement: keep the struck and the new words apart as words
            out.append(" ")
        if j2 > j1:
            out.append(f"<ins style='{INS_STYLE}'>{escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Names of the answer fields whose values differ (all of them when one answer is missing)."""
    old, new = old or {}, new or {}
    keys = [k for k, _ in WHOLE_FIELDS + WORD_FIELDS]
    return [k for k in keys if _text(old.get(k)) != _text(new.get(k))]


def answers_diff_html(
    old_title: str, old: dict[str, Any] | None, new_title: str, new: dict[str, Any] | None, elem_class: str
) -> str:
    """A table with one row per answer field: ``old`` and ``new`` side by side, differences marked.

    A missing answer (invalid JSON) shows as "no valid answer". ``elem_class`` names the table.
    """
    if old is None or new is None:
        missing = old_title if old is None else new_title
        return (
            f"<div class='{escape(elem_class)}'><i>{escape(missing)}: no valid answer to compare.</i></div>"
        )
    changed = set(changed_fields(old, new))
    rows = []
    for key, label in WHOLE_FIELDS + WORD_FIELDS:
        o, n = _text(old.get(key)), _text(new.get(key))
        if key in changed and (key, label) in WORD_FIELDS:
            cells = f"<td>{escape(o)}</td><td class='diff-words'>{word_diff_html(o, n)}</td>"
        elif key in changed:
            cells = (
                f"<td style='{CHANGED_STYLE}'>{escape(o)}</td><td style='{CHANGED_STYLE}'>{escape(n)}</td>"
            )
        else:
            cells = f"<td>{escape(o)}</td><td>{escape(n)}</td>"
        mark = " class='diff-changed'" if key in changed else ""
        rows.append(
            f"<tr data-field='{key}'{mark}><th style='text-align:left'>{escape(label)}</th>{cells}</tr>"
        )
    summary = (
        f"Differs in: {escape(', '.join(sorted(changed)))}" if changed else "The two answers are the same."
    )
    return (
        f"<div class='{escape(elem_class)}'><p class='diff-summary'>{summary}</p>"
        f"<table style='width:100%;vertical-align:top'><tr><th></th><th>{escape(old_title)}</th>"
        f"<th>{escape(new_title)}</th></tr>{''.join(rows)}</table></div>"
    )


def model_diff_html(base: dict[str, Any] | None, finetuned: dict[str, Any] | None) -> str:
    """Base vs fine-tuned, field by field."""
    return answers_diff_html("Base", base, "Fine-tuned", finetuned, "model-diff")


def correction_diff_html(
    start: dict[str, Any] | None, corrected: dict[str, Any], who: str, review_id: int
) -> str:
    """A correction vs the model answer it started from."""
    title = f"Correction #{review_id} by {who}"
    return answers_diff_html("Model answer", start, title, corrected, "correction-diff")
