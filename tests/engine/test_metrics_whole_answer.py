"""engine.metrics' whole-answer checks (policy_refs, next_action, the text check) and issue 15's targets,
on real cases of the frozen sets and hand-made answers; no model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.metrics import (
    EvalRecord,
    check_targets,
    cites_rule,
    make_record,
    render_report,
    repeated_fragment,
    summarize_variant,
    targets_for,
    text_problems,
)
from engine.types import ModelAnswer
from policies import Case, expected_decision, flags, parse_case
from policies.synth_text import reference_answer

ROOT = Path(__file__).resolve().parents[2]


def _cases(name: str, n: int) -> list[Case]:
    with open(ROOT / "data" / "generated" / name, encoding="utf-8") as fh:
        return [parse_case(json.loads(line)["input"]) for line, _ in zip(fh, range(n), strict=False)]


def _answer(case: Case, body: dict[str, Any] | None, variant: str = "finetuned") -> ModelAnswer:
    return ModelAnswer(case_id=case.case_id, variant=variant, model_version="m",
                       status="ok" if body else "invalid", raw_text="", answer=body, error=None,
                       latency_s=0.1, input_tokens=10, output_tokens=20, truncated=False)


@pytest.mark.parametrize("name", ["eval.jsonl", "stress.jsonl"])
def test_reference_answers_pass_every_whole_answer_check(name: str) -> None:
    # The generator's own outputs are what the checks compare with: they must score 100%.
    cases = _cases(name, 60)
    records = [make_record(c, expected_decision(c).decision,
                           _answer(c, reference_answer(c).model_dump(mode="json"))) for c in cases]
    figures = summarize_variant(records)
    assert figures["policy_refs_exact"] == figures["next_action_match"] == figures["text_check"] == 1.0
    assert figures["text_problems"] == {} == figures["facts_misstated"] and figures["facts_check"] == 1.0
    # the guard sends a reference answer unread unless the case itself raises a flag
    assert all(r.auto_send == (not flags(c)) for r, c in zip(records, cases, strict=True))
    assert figures["auto_send_rate"] == sum(not flags(c) for c in cases) / len(cases) > 0.5


def test_auto_send_rate_counts_what_the_guard_would_send_unread() -> None:
    case = next(c for c in _cases("eval.jsonl", 60) if not flags(c))
    ref = reference_answer(case).model_dump(mode="json")
    wrong = next(d for d in ("DENY", "APPROVE_REFUND", "ESCALATE") if d != ref["decision"])
    records = [make_record(case, ref["decision"], _answer(case, body)) for body in (
        ref,  # sent
        {**ref, "customer_response": "I'm sorry, butside thsoror with no fee."},  # the item not named
        {**ref, "decision": wrong},  # not the rule engine's decision, violation or not
    )] + [make_record(case, ref["decision"], _answer(case, None))]  # no answer: never sent
    assert [r.auto_send for r in records] == [True, False, False, False]
    assert summarize_variant(records)["auto_send_rate"] == 0.25


def test_each_whole_answer_check_catches_its_own_fault() -> None:
    case = next(c for c in _cases("stress.jsonl", 40) if expected_decision(c).limit_applied)
    ref = reference_answer(case).model_dump(mode="json")
    rule, item = expected_decision(case).rule, case.order.item
    faults = {
        "refs": {**ref, "policy_refs": [rule]},  # LIM-1 left out
        "action": {**ref, "next_action": "Close the request."},
        "text": {**ref, "reasoning": "Refund approved. Refund approved. Refund approved.",
                 "customer_response": "We are sorry, we are sorry, we are sorry."},
    }
    records = {k: make_record(case, "ESCALATE", _answer(case, body)) for k, body in faults.items()}
    assert not records["refs"].refs_exact and records["refs"].next_action_match and records["refs"].text_ok
    assert records["action"].refs_exact and not records["action"].next_action_match
    assert records["text"].text_problems == ("rule_not_cited", "item_not_named", "repeated_fragment")
    # spacing and case aside, the same next action matches
    loose = {**ref, "next_action": "  " + ref["next_action"].upper().replace(" ", "  ")}
    assert make_record(case, "ESCALATE", _answer(case, loose)).next_action_match
    assert item.lower() in ref["customer_response"].lower() and cites_rule(ref["reasoning"], rule)


def test_invalid_answer_fails_every_whole_answer_check() -> None:
    [case] = _cases("eval.jsonl", 1)
    record = make_record(case, "DENY", _answer(case, None))
    assert not record.refs_exact and not record.next_action_match
    assert record.text_problems == ("no_answer",)
    figures = summarize_variant([record])
    assert figures["text_check"] == 0.0 and figures["text_problems"] == {"no_answer": 1}
    assert figures["facts_check"] == 0.0 and figures["facts_misstated"] == {"no_answer": 1}


def test_text_helpers() -> None:
    assert cites_rule("RET-12: refund", "RET-12") and not cites_rule("RET-12: refund", "RET-1")
    assert cites_rule("per RET-1, LIM-1 applies", "RET-1") and not cites_rule("XRET-1", "RET-1")
    assert repeated_fragment("The laptop stand is here; the laptop stand is here.") == "the laptop stand is"
    assert repeated_fragment("The laptop. The laptop, sadly.") is None  # two words, under four
    # an apostrophe keeps a word whole: "it's" is not "it s"
    assert repeated_fragment("It's your order's day; it s your order s day.") is None
    # the item's name counts as one word: naming it twice is not a loop, looping around it still is
    long_name = "Sony WH-1000XM5 wireless headphones"
    twice = ("We have your Sony WH-1000XM5 wireless headphones. "
             "Once the Sony WH-1000XM5 wireless headphones arrive")
    assert repeated_fragment(twice) == "sony wh 1000xm5 wireless"
    assert repeated_fragment(twice, name=long_name) is None
    # ... and so does a name shortened as names_item accepts it (half its words, in its order)
    short_twice = ("We have your WH-1000XM5 wireless headphones. Once your WH-1000XM5 wireless headphones "
                   "arrive, your wireless headphones get a refund.")
    assert repeated_fragment(short_twice) == "your wh 1000xm5 wireless"
    assert repeated_fragment(short_twice, name=long_name) is None
    # a piece under half of the name is a word like any other: "your headphones arrive" twice loops
    assert repeated_fragment("So your headphones arrive today. So your headphones arrive today.",
                             name=long_name) == "so your headphones arrive"
    looping = "Your Wine case is approved. Your Wine case is approved."
    assert repeated_fragment(looping, name="Wine case") == "your wine case is approved"
    [case] = _cases("eval.jsonl", 1)
    good = reference_answer(case).model_dump(mode="json")
    assert text_problems(case, good) == ()


def test_targets_per_set_and_met_or_not() -> None:
    assert targets_for("data/generated/stress.jsonl") == "stress"
    assert targets_for("data/generated/eval.jsonl") == "eval"
    assert targets_for("data/generated/validation.jsonl") is None
    figures = {"decision_accuracy": 0.97, "violation_rate": 0.006, "json_validity": 1.0,
               "policy_refs_exact": 0.5}
    got = {t["figure"]: (t["target"], t["met"]) for t in check_targets(figures, "stress")}
    assert got == {"decision_accuracy": (">= 97.0%", True), "violation_rate": ("<= 0.5%", False),
                   "json_validity": (">= 100.0%", True), "policy_refs_exact": (">= 95.0%", False)}
    eval_got = {t["figure"]: t["met"] for t in check_targets({**figures, "violation_rate": 0.0}, "eval")}
    assert eval_got["violation_rate"] and not eval_got["decision_accuracy"]


def test_report_shows_whole_answer_rows_and_old_records_default_to_unchecked() -> None:
    # Records built without the whole-answer fields (as stored elsewhere) count as not passing.
    record = EvalRecord(case_id="C-1", variant="finetuned", label="DENY", rule="RET-9", chain="RET-9",
                        request_type="return", region="EU", predicted="DENY", status="ok", violations=(),
                        latency_s=0.1, input_tokens=1, output_tokens=1)
    figures = summarize_variant([record])
    assert figures["decision_accuracy"] == 1.0 and figures["policy_refs_exact"] == 0.0
    report = render_report({"finetuned": figures})
    assert "| policy_refs exact | 0.0% |" in report and "| text check | 0.0% |" in report
    assert "| facts check | 0.0% |" in report


def test_the_facts_check_counts_answers_by_kind_of_misstated_fact() -> None:
    cases = [c for c in _cases("stress.jsonl", 80) if c.order.days_since_delivery is not None][:3]
    bodies = [reference_answer(c).model_dump(mode="json") for c in cases]
    wrong_days = f"{cases[0].order.days_since_delivery + 1} days since delivery"
    bodies[0]["reasoning"] = f"{expected_decision(cases[0]).rule}: {wrong_days}."
    bodies[1]["customer_response"] += f" The customer has {cases[1].customer.claims_last_12m + 7} claims."
    records = [make_record(c, expected_decision(c).decision, _answer(c, b))
               for c, b in zip(cases, bodies, strict=True)]
    assert [r.misstated for r in records] == [("days",), ("claims",), ()]
    figures = summarize_variant(records)
    assert figures["facts_check"] == pytest.approx(1 / 3)
    assert figures["facts_misstated"] == {"claims": 1, "days": 1}
