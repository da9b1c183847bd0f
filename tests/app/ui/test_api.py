"""The programmatic API over gradio_client: /compare, /submit_review, /export, with roles."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlmodel import select

from db.audit import audit_entries
from db.models import ExportItem, Review
from policies import parse_case
from policies.synth_text import reference_answer
from tests.conftest import tiny_cases

GOOD_ANSWER = {
    "decision": "DENY",
    "reasoning": "RET-10 applies: outside the window.",
    "customer_response": "We are sorry, but this return is outside our window.",
    "next_action": "Close the case.",
    "policy_refs": ["RET-10"],
}


def _client(served, user: str) -> Client:
    return Client(served.url, auth=served.auth(user), verbose=False)


def _reference(case_id: str) -> dict:
    """The rule engine's whole answer to a tiny case: a correction that passes the consistency check."""
    case = next(parse_case(c) for c in tiny_cases() if c["case_id"] == case_id)
    return reference_answer(case).model_dump(mode="json")


def test_compare_returns_both_answers_and_guard(served):
    out = _client(served, "ann").predict(json.dumps(tiny_cases()[6]), api_name="/compare")
    assert set(out["answers"]) == {"base", "finetuned"}
    for answer in out["answers"].values():
        assert answer["guard"]["expected_decision"] and "violations" in answer["guard"]
        assert answer["model_version"] and answer["output_tokens"] > 0
    again = _client(served, "ann").predict(json.dumps(tiny_cases()[6]), api_name="/compare")
    assert again["answers"]["base"]["run_id"] == out["answers"]["base"]["run_id"]  # cached, not recomputed


@pytest.mark.parametrize(
    "payload, field", [("{not json", "<root>"), (json.dumps({**tiny_cases()[0], "region": "XX"}), "region")]
)
def test_compare_bad_input_names_field(served, payload, field):
    with pytest.raises(AppError, match=field):
        _client(served, "ann").predict(payload, api_name="/compare")


def test_submit_review_roles_and_errors(served):
    case_id = served.batch_case_ids[0]
    agent, reviewer = _client(served, "ann"), _client(served, "rita")
    with pytest.raises(AppError, match="may not correct"):
        agent.predict(case_id, "correct", json.dumps(GOOD_ANSWER), "", api_name="/submit_review")
    with pytest.raises(AppError, match="decision"):
        reviewer.predict(
            case_id,
            "correct",
            json.dumps({**GOOD_ANSWER, "decision": "MAYBE"}),
            "",
            api_name="/submit_review",
        )
    with pytest.raises(AppError, match="action"):
        reviewer.predict(case_id, "delete", "", "", api_name="/submit_review")
    with pytest.raises(AppError, match="case_id"):
        reviewer.predict("C-NOPE", "flag", "", "why", api_name="/submit_review")
    flagged = agent.predict(
        served.batch_case_ids[1], "flag", "", "two items in one box", api_name="/submit_review"
    )
    saved = reviewer.predict(case_id, "correct", json.dumps(GOOD_ANSWER), "fixed", api_name="/submit_review")
    assert saved["status"] == "corrected" and flagged["status"] == "flagged_ambiguous"
    with served.store.session() as s:
        reviews = s.exec(select(Review)).all()
        assert sorted((r.reviewer, r.status) for r in reviews) == [
            ("ann", "flagged_ambiguous"),
            ("rita", "corrected"),
        ]
        denied = audit_entries(s, action="denied")
        assert [(d.actor, d.entity_id) for d in denied] == [("ann", "correct")]


def test_export_ops_only_and_no_double_export(served):
    reviewer, ops = _client(served, "rita"), _client(served, "otto")
    good = _reference(served.batch_case_ids[0])
    saved = reviewer.predict(
        served.batch_case_ids[0], "correct", json.dumps(good), "", api_name="/submit_review"
    )
    assert saved["consistency_issues"] == []
    reviewer.predict(
        served.eval_case_ids[0], "correct", json.dumps(GOOD_ANSWER), "", api_name="/submit_review"
    )
    with pytest.raises(AppError, match="may not export"):
        reviewer.predict(api_name="/export")
    out = ops.predict(api_name="/export")
    assert out["count"] == 1 and len(out["sha256"]) == 64 and len(out["skipped"]["eval_set"]) == 1
    rows = [json.loads(line) for line in open(out["export_path"])]
    assert rows[0]["messages"][-1] == {
        "role": "assistant",
        "content": json.dumps(good, separators=(",", ":"), ensure_ascii=False),
    }
    with pytest.raises(AppError, match="nothing to export"):
        ops.predict(api_name="/export")
    with served.store.session() as s:
        assert len(s.exec(select(ExportItem)).all()) == 1
        assert [e.actor for e in audit_entries(s, action="denied")] == ["rita"]


def test_login_required(served):
    import httpx

    assert httpx.get(served.url + "gradio_api/info").status_code == 401
    with pytest.raises(Exception):  # noqa: B017 - bad password: the client cannot even connect
        Client(served.url, auth=("otto", "wrong-password"), verbose=False)


def test_an_inconsistent_correction_is_saved_with_warnings_and_exported_only_when_included(served):
    """GOOD_ANSWER (DENY by RET-10) on an EU cancellation of a shipped order (CAN-2): refs against the
    rule engine and the decision, the item, the next action; saved, kept out of the default export."""
    reviewer, ops = _client(served, "rita"), _client(served, "otto")
    case_id = served.batch_case_ids[0]
    saved = reviewer.predict(case_id, "correct", json.dumps(GOOD_ANSWER), "", api_name="/submit_review")
    assert saved["status"] == "corrected"
    codes = [i["code"] for i in saved["consistency_issues"]]
    assert codes == ["refs_not_expected", "rule_not_cited", "item_not_named"]
    assert "CAN-2" in saved["consistency_issues"][0]["message"]
    shown = reviewer.predict(case_id, api_name="/reviews")["reviews"]
    assert shown[-1]["consistency_issues"] == saved["consistency_issues"]
    with pytest.raises(AppError, match="1 refused as inconsistent"):
        ops.predict(api_name="/export")
    out = ops.predict(True, api_name="/export")
    assert out["count"] == 1 and out["marked"] == [saved["review_id"]]
    rows = [json.loads(line) for line in open(out["export_path"])]
    assert rows[0]["consistency_issues"] == codes
