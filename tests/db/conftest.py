"""Fixtures for the store tests: a real SQLite file per test, sample cases and model answers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from db import Store, create_user, open_store
from engine.types import GuardVerdict, ModelAnswer
from policies import Case, check, expected_decision, flags, parse_case

SAMPLE_CASE: dict[str, Any] = {
    "case_id": "C-000123",
    "region": "US",
    "request_type": "return",
    "reason": "changed_mind",
    "message": "Hi, the headphones are fine but I don't need them anymore <b>bold</b>",
    "customer": {"id": "U-88", "tier": "standard", "claims_last_12m": 0},
    "order": {
        "id": "O-5512",
        "category": "electronics",
        "item": "Wireless headphones",
        "price": 129.99,
        "currency": "USD",
        "final_sale": False,
        "status": "delivered",
        "days_since_delivery": 12,
        "opened": True,
        "signature_confirmed": False,
    },
}


def make_case(case_id: str = "C-000123", **order: Any) -> Case:
    data = copy.deepcopy(SAMPLE_CASE)
    data["case_id"] = case_id
    data["order"].update(order)
    return parse_case(data)


def make_answer(
    case: Case,
    variant: str,
    decision: str | None,
    version: str = "v1",
    decisions: dict[str, str | None] | None = None,
) -> ModelAnswer:
    exp = expected_decision(case)
    answer = (
        None
        if decision is None
        else {
            "decision": decision,
            "reasoning": f"{exp.rule} applies.",
            "customer_response": "Thank you.",
            "next_action": "Send a label.",
            "policy_refs": list(exp.policy_refs),
        }
    )
    violations = tuple(check(case, decision)) if decision else ()
    fl = tuple(flags(case, decisions))
    return ModelAnswer(
        case_id=case.case_id,
        variant=variant,
        model_version=f"{variant}@{version}",
        status="ok" if answer else "invalid",
        raw_text="{...}",
        answer=answer,
        error=None if answer else "bad json",
        latency_s=0.5,
        input_tokens=100,
        output_tokens=40,
        truncated=False,
        guard=GuardVerdict(
            exp.decision,
            exp.policy_refs,
            violations,
            fl,
            auto_send=bool(answer) and not violations and not fl,
        ),
    )


@pytest.fixture
def store(tmp_path) -> Store:
    s = open_store(tmp_path / "policyops.db")
    with s.session() as session:
        create_user(session, "ann", "agent", "agent-pass-1")
        create_user(session, "rita", "reviewer", "review-pass-1")
        create_user(session, "otto", "ops", "ops-pass-12")
    return s
