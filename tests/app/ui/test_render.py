"""The case view shows customer and model text as text: markup is escaped, never rendered."""

from __future__ import annotations

import json

import pandas as pd

from app.ui.metrics_tab import model_figure
from app.ui.render import answer_html, case_html, guard_html, readable_figures
from db.models import ModelRun
from policies import parse_case
from tests.conftest import tiny_cases

EVIL = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_customer_message_and_model_output_are_escaped():
    case = parse_case({**tiny_cases()[0], "message": EVIL})
    html = case_html(case, "pending", 1, False)
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    run = ModelRun(
        case_pk=1,
        variant="base",
        model_version="v",
        status="ok",
        decision="DENY",
        answer_json=json.dumps(
            {
                "decision": "DENY",
                "reasoning": EVIL,
                "customer_response": EVIL,
                "next_action": "x",
                "policy_refs": ["RET-10"],
            }
        ),
        raw_text=EVIL,
        guard_json=json.dumps(
            {
                "expected_decision": "ESCALATE",
                "expected_refs": ["FRD-1"],
                "violations": ["FRAUD_NOT_ESCALATED"],
                "flags": ["LEGAL_THREAT"],
                "auto_send": False,
            }
        ),
    )
    html = answer_html("Base", run)
    assert "<script>" not in html and "<img" not in html
    assert "#b91c1c" in html and "FRAUD_NOT_ESCALATED" in html  # violations in red
    assert "#b45309" in html and "LEGAL_THREAT" in html  # flags in amber
    bad = ModelRun(case_pk=1, variant="base", model_version="v", status="invalid", raw_text=EVIL, error=EVIL)
    assert "<script>" not in answer_html("Base", bad)


def test_metrics_figure_handles_empty_and_data():
    import pandas as pd

    assert model_figure(pd.DataFrame(columns=["model_version", "variant", "metric", "value", "n"]))
    frame = pd.DataFrame(
        [{"model_version": "v1", "variant": "base", "metric": "JSON validity", "value": 0.5, "n": 2}]
    )
    assert model_figure(frame).axes


def test_figures_read_as_percentages_with_one_decimal():
    frame = pd.DataFrame({"metric": ["decision accuracy", "kappa"], "value": [0.33663366336633666, None],
                          "psi": [3.3512, 0.0]})
    shown = readable_figures(frame, percent=("value",), decimals=("psi", "absent"))
    assert list(shown["value"]) == ["33.7%", ""] and list(shown["psi"]) == ["3.35", "0.00"]
    assert frame["value"][0] == 0.33663366336633666  # the figures themselves are left alone


def test_case_facts_are_a_strip_and_the_guard_verdict_heads_each_answer():
    case = parse_case({**tiny_cases()[0], "message": "line one\nline two"})
    html = case_html(case, "pending", 7, True)
    assert "<table" not in html and html.count("<div class='fact'>") == 11
    assert f"{case.case_id} (#7)" in html and ">line one\nline two</pre>" in html
    run = ModelRun(
        case_pk=1, variant="finetuned", model_version="v", status="ok", decision="DENY",
        answer_json=json.dumps({"decision": "DENY", "reasoning": "r", "customer_response": "c",
                                "next_action": "n", "policy_refs": ["RET-10"]}),
        guard_json=json.dumps({"expected_decision": "DENY", "expected_refs": ["RET-10"], "violations": [],
                               "flags": [], "auto_send": True}),
    )
    card = answer_html("Fine-tuned", run)
    assert card.index("class='guard'") < card.index("<dl>")  # in view while the answer scrolls
    assert "auto-send OK" in card and "name the item" not in card


def test_the_guard_says_why_an_answer_needs_a_human():
    guard = {"expected_decision": "APPROVE_REFUND", "expected_refs": ["RET-3"], "violations": [], "flags": [],
             "auto_send": False, "held_back": ["decision_not_expected", "item_not_named"]}
    run = ModelRun(case_pk=1, variant="finetuned", model_version="v", status="ok", decision="DENY",
                   answer_json=json.dumps({"decision": "DENY"}), guard_json=json.dumps(guard))
    card = answer_html("Fine-tuned", run)
    assert "needs a human (<span" in card
    assert "a decision other than the expected one; the customer response does not name the item" in card
    old = {k: v for k, v in guard.items() if k != "held_back"}  # a verdict stored before the check
    assert "needs a human<br>" in guard_html(old)


def test_order_status_says_not_delivered_or_missing_instead_of_null():
    """days_since_delivery is null for an order not delivered, and missing data for one delivered."""
    base = tiny_cases()[0]

    def shown(status: str, days: int | None) -> str:
        order = {**base["order"], "status": status, "days_since_delivery": days}
        return case_html(parse_case({**base, "order": order}), "pending", 1, False)

    assert "delivered · days since delivery 12" in shown("delivered", 12)
    assert "delivered · days since delivery missing" in shown("delivered", None)
    assert "shipped · not delivered" in shown("shipped", None)
    assert "null" not in shown("shipped", None) + shown("delivered", None)
