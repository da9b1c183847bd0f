"""HTML for the case view. Every string that came from a customer or a model is escaped here:
the console shows it as text, never as markup."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

import pandas as pd

from db.cases import run_answer, run_guard
from db.models import ModelRun
from engine.consistency import ConsistencyIssue
from policies import Case, applicable_sections

VIOLATION_STYLE = "color:#b91c1c;font-weight:600"  # red
FLAG_STYLE = "color:#b45309;font-weight:600"  # amber
# Why the guard held an answer back (engine.guard.HELD_BACK_CODES), as the card says it.
HELD_BACK_WORDS = {
    "decision_not_expected": "a decision other than the expected one",
    "item_not_named": "the customer response does not name the item",
    "next_action_mismatch": "the next action does not fit the decision",
    "repeated_fragment": "the customer response repeats itself",
    "garbled_text": "garbled text",
}
ANSWER_FIELDS = (
    ("decision", "Decision"),
    ("reasoning", "Reasoning"),
    ("customer_response", "Customer response"),
    ("next_action", "Next action"),
    ("policy_refs", "Policy refs"),
)


def _e(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value)
    return escape("" if value is None else str(value))


def case_html(case: Case, status: str, case_pk: int, in_eval_set: bool) -> str:
    """The case's structured fields as a compact strip of facts, next to the customer message
    (escaped, pre-wrapped, scrolling inside its box when long)."""
    o, c = case.order, case.customer
    if o.days_since_delivery is not None:
        delivery = f"{o.status} · days since delivery {o.days_since_delivery}"
    elif o.status == "delivered":  # delivered without a day count: missing data (GEN-1 asks for it)
        delivery = f"{o.status} · days since delivery missing"
    else:
        delivery = f"{o.status} · not delivered"
    facts = [
        ("Case", f"{case.case_id} (#{case_pk})"),
        ("Status", status),
        ("Eval set", "yes" if in_eval_set else "no"),
        ("Region", case.region),
        ("Request", case.request_type),
        ("Reason", case.reason),
        ("Customer", f"{c.id} · tier {c.tier} · {c.claims_last_12m} claims in 12 months"),
        ("Order", f"{o.id} · {o.category} · {o.item}"),
        ("Price", f"{o.price:.2f} {o.currency}"),
        ("Order status", delivery),
        ("Flags", f"final_sale={o.final_sale} opened={o.opened} signature_confirmed={o.signature_confirmed}"),
    ]
    items = "".join(f"<div class='fact'><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    return (
        f"<div class='case-fields'><dl class='facts'>{items}</dl>"
        f"<div class='message-box'><h4>Customer message</h4><pre class='customer-message' "
        f"style='white-space:pre-wrap'>{_e(case.message)}</pre></div></div>"
    )


def policy_markdown(case: Case) -> str:
    """The applicable policy sections (our own documents, rendered as Markdown)."""
    return "\n\n".join(s.render() for s in applicable_sections(case))


def guard_html(guard: dict[str, Any]) -> str:
    """The guard's verdict: violations in red, flags in amber, expected decision and refs, whether the
    answer may be auto-sent and, when the guard held it back, why (amber)."""
    if not guard:
        return "<div class='guard'>No guard verdict.</div>"
    violations = guard.get("violations") or []
    flags = guard.get("flags") or []
    v_html = f"<span style='{VIOLATION_STYLE}'>{_e(violations)}</span>" if violations else "none"
    f_html = f"<span style='{FLAG_STYLE}'>{_e(flags)}</span>" if flags else "none"
    send = "auto-send OK" if guard.get("auto_send") else "needs a human"
    if held := guard.get("held_back"):
        why = "; ".join(HELD_BACK_WORDS.get(code, code) for code in held)
        send += f" (<span style='{FLAG_STYLE}'>{_e(why)}</span>)"
    return (
        f"<div class='guard'><b>Guard</b>: expected <b>{_e(guard.get('expected_decision'))}</b> "
        f"({_e(guard.get('expected_refs'))}) · {send}<br>Violations: {v_html}<br>Flags: {f_html}</div>"
    )


def consistency_html(issues: Sequence[ConsistencyIssue] | None) -> str:
    """The training-data check of an answer, shown before anyone approves it: its issues in amber, or
    a one-word "consistent"; nothing when there is no valid answer to check (None)."""
    if issues is None:
        return ""
    if not issues:
        return "<div class='consistency consistency-ok'>Consistency: ok</div>"
    items = "".join(f"<li>{_e(i.message)}</li>" for i in issues)
    return (
        f"<details class='consistency'><summary style='{FLAG_STYLE}'>Consistency: {len(issues)} "
        f"issue{'s' if len(issues) != 1 else ''} — approved as is, it stays out of training data unless an "
        f"export includes it</summary><ul>{items}</ul></details>"
    )


def answer_html(title: str, run: ModelRun | None, issues: Sequence[ConsistencyIssue] | None = None) -> str:
    """One model's answer card: its title, status and figures, the guard panel (first, so it is in view
    while the answer scrolls inside its bounded panel), the consistency check of the answer (``issues``,
    as :func:`engine.consistency.consistency_issues` found them; None: not shown), then the fields."""
    if run is None:
        return f"<div class='answer'><h3>{_e(title)}</h3><p>No answer yet.</p></div>"
    answer = run_answer(run) or {}
    body = (
        "".join(
            f"<dt><b>{label}</b></dt><dd style='white-space:pre-wrap'>{_e(answer.get(key))}</dd>"
            for key, label in ANSWER_FIELDS
        )
        if answer
        else (
            f"<p style='{VIOLATION_STYLE}'>Answer {_e(run.status)}: {_e(run.error)}</p>"
            f"<pre style='white-space:pre-wrap'>{_e(run.raw_text)}</pre>"
        )
    )
    figures = (
        f"{_e(run.model_version)} · status {_e(run.status)} · {run.latency_s:.2f} s · "
        f"{run.input_tokens} in / {run.output_tokens} out tokens"
    )
    return (
        f"<div class='answer answer-{_e(run.variant)}'><h3>{_e(title)}</h3><small>{figures}</small>"
        f"{guard_html(run_guard(run))}{consistency_html(issues)}<dl>{body}</dl></div>"
    )


def _figure(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; a missing figure (None, NaN) is an empty cell."""
    return "" if value is None or pd.isna(value) else format(float(value), spec)


def readable_figures(
    frame: pd.DataFrame, percent: tuple[str, ...] = (), decimals: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A copy of ``frame`` for people to read: ``percent`` columns (shares 0..1) as percentages with one
    decimal ("33.7%"), ``decimals`` columns with two decimals; columns the frame lacks are skipped."""
    out = frame.copy()
    for columns, spec in ((percent, ".1%"), (decimals, ".2f")):
        for name in columns:
            if name in out.columns:
                out[name] = [_figure(v, spec) for v in out[name]]
    return out
