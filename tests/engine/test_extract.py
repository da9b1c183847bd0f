"""Answer extraction from unconstrained text: fences, prose, nesting, truncation, junk, bad decisions."""

from __future__ import annotations

import json

import pytest

from engine.extract import extract_answer, first_json_object

GOOD = {"decision": "DENY", "reasoning": "RET-10: outside the window {30 days}.",
        "customer_response": "Sorry, \"we\" can't take it back.", "next_action": "Close the case.",
        "policy_refs": ["RET-10"]}
GOOD_TEXT = json.dumps(GOOD)


@pytest.mark.parametrize("text", [
    GOOD_TEXT,
    f"```json\n{GOOD_TEXT}\n```",
    f"Sure! Here is my answer:\n```\n{GOOD_TEXT}\n```\nHope that helps.",
    f"Here is the decision: {GOOD_TEXT} Let me know {{if}} you need more.",
    f"{GOOD_TEXT}\n{{\"decision\": \"ESCALATE\"}}",  # a second object after the answer is ignored
    json.dumps(GOOD, indent=2),
])
def test_valid_answer_found(text: str) -> None:
    got = extract_answer(text)
    assert got.status == "ok", got.error
    assert got.answer == GOOD


def test_braces_and_quotes_inside_strings_do_not_end_the_object() -> None:
    text = 'x {"a": "}{\\"}", "b": {"c": 1}} y'
    obj, closed = first_json_object(text)
    assert closed and json.loads(obj) == {"a": '}{"}', "b": {"c": 1}}


def test_truncated_when_token_limit_hit_before_closing() -> None:
    got = extract_answer(GOOD_TEXT[:40], hit_token_limit=True)
    assert got.status == "truncated" and "max_new_tokens" in got.error
    unclosed = extract_answer(GOOD_TEXT[:40], hit_token_limit=False)
    assert unclosed.status == "invalid" and "never closes" in unclosed.error


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("   \n", "empty"),
    ("I think we should refund the customer.", "no JSON object"),
    ("{not json at all}", "not valid JSON"),
    ("[1, 2, 3]", "no JSON object"),
])
def test_invalid_outputs_explain_why(text: str, needle: str) -> None:
    got = extract_answer(text)
    assert got.status == "invalid" and got.answer is None
    assert needle in got.error


def test_unknown_decision_is_invalid_and_names_the_field() -> None:
    got = extract_answer(json.dumps({**GOOD, "decision": "REFUND_EVERYTHING"}))
    assert got.status == "invalid" and "decision" in got.error


def test_missing_and_extra_fields_are_invalid() -> None:
    missing = {k: v for k, v in GOOD.items() if k != "policy_refs"}
    assert "policy_refs" in extract_answer(json.dumps(missing)).error
    assert extract_answer(json.dumps({**GOOD, "confidence": 0.9})).status == "invalid"
