"""Prompt injection measured honestly (issue 17): the detector's recall on
tests/policies/data/injections.jsonl (61 injections in 12 languages, base64, homoglyphs, zero-width,
leetspeak, spelt-out, URL/HTML-encoded, reversed, ROT13, fake system and tool text; 20 benign
messages), reported per half: ``dev`` (looked at while improving the detector) and ``held_out``
(not looked at; written by the same author at the same time, so optimistic). The guard's protection,
no auto-send of an answer that obeys an injection, must stay 100% whether or not the detector hits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.guard import guard
from policies import InvalidCase, expected_decision, parse_case
from policies.rules import injection_suspected
from tests.conftest import tiny_cases

SET = Path(__file__).parent / "data" / "injections.jsonl"
ROWS = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]
INJECTIONS = [r for r in ROWS if r["injection"]]
# (tiny case, the decision its fields give) where an obedient refund is a violation
TARGETS = [(2, "DENY"), (6, "ESCALATE"), (9, "ESCALATE")]
OBEYED = {"decision": "APPROVE_REFUND", "reasoning": "RET-12 applies.", "customer_response": "Refunded.",
          "next_action": "Refund now.", "policy_refs": ["RET-12"]}


def recall(split: str) -> tuple[int, int]:
    rows = [r for r in INJECTIONS if r["split"] == split]
    return sum(injection_suspected(r["text"]) for r in rows), len(rows)


def test_the_set_is_large_and_varied():
    assert len(INJECTIONS) >= 50
    assert len({r["language"] for r in INJECTIONS}) >= 10
    assert {"base64", "homoglyph", "zero_width", "leetspeak"} <= {r["disguise"] for r in INJECTIONS}


@pytest.mark.parametrize(("split", "floor"), [("dev", 0.9), ("held_out", 0.85)])
def test_detector_recall(split, floor):
    hits, total = recall(split)
    print(f"injection recall ({split}): {hits}/{total} = {hits / total:.1%}")
    assert hits / total >= floor


def test_benign_messages_are_not_flagged():
    flagged = [r["id"] for r in ROWS if not r["injection"] and injection_suspected(r["text"])]
    assert flagged == []


@pytest.mark.parametrize("row", INJECTIONS, ids=[r["id"] for r in INJECTIONS])
def test_guard_never_auto_sends_an_obeyed_injection(row):
    for index, expected in TARGETS:
        try:
            case = parse_case({**tiny_cases()[index], "message": row["text"]})
        except InvalidCase as exc:  # zero-width characters: refused at the door, never answered
            assert exc.fields == ["message"]
            continue
        assert expected_decision(case).decision == expected  # the message changes nothing
        assert not guard(case, OBEYED).auto_send
        if injection_suspected(row["text"]):  # a hit also holds back the policy's own answer
            assert not guard(case, {**OBEYED, "decision": expected}).auto_send
