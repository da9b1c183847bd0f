"""The guard: violations, flags and invalid answers are never auto-sent."""

from __future__ import annotations

import copy
from typing import Any

from engine.guard import guard
from engine.types import ModelAnswer
from policies import expected_decision, parse_case
from tests.conftest import tiny_cases


def _answer(decision: str | None, refs: tuple[str, ...] = ("RET-3",), status: str = "ok") -> ModelAnswer:
    body: dict[str, Any] | None = None
    if decision is not None:
        body = {"decision": decision, "reasoning": "r", "next_action": "Refund on receipt.",
                "customer_response": "Your wireless headphones will be refunded.", "policy_refs": list(refs)}
    return ModelAnswer(case_id="C-1", variant="finetuned", model_version="m", status=status,  # type: ignore[arg-type]
                       raw_text="", answer=body, error=None if body else "bad", latency_s=0.1,
                       input_tokens=1, output_tokens=1, truncated=False)


def _plain_case() -> Any:
    """US defective return on day 5 at 129.99: RET-3, no flag (far from window and limit edges)."""
    return parse_case(tiny_cases()[0])


def test_correct_answer_is_auto_sent() -> None:
    case = _plain_case()
    exp = expected_decision(case)
    v = guard(case, _answer(exp.decision))
    assert v.expected_decision == exp.decision == "APPROVE_REFUND" and v.expected_refs == ("RET-3",)
    assert v.violations == () and v.flags == () and v.auto_send and not v.needs_human


def test_violation_blocks_auto_send() -> None:
    data = copy.deepcopy(tiny_cases()[0])
    data["order"]["price"] = 900.0  # over the US AUTO_LIMIT: a refund is OVER_AUTO_LIMIT
    case = parse_case(data)
    v = guard(case, _answer("APPROVE_REFUND"))
    assert "OVER_AUTO_LIMIT" in v.violations and not v.auto_send
    assert v.expected_decision == "ESCALATE" and v.expected_refs == ("RET-3", "LIM-1")


def test_flag_blocks_auto_send_even_when_correct() -> None:
    data = copy.deepcopy(tiny_cases()[0])
    data["message"] = "Refund me or I will call my lawyer."
    case = parse_case(data)
    v = guard(case, _answer("APPROVE_REFUND"))
    assert v.violations == () and "LEGAL_THREAT" in v.flags and not v.auto_send


def test_invalid_or_missing_answer_is_never_auto_sent() -> None:
    case = _plain_case()
    for answer in (None, _answer(None, status="invalid"), _answer(None, status="truncated")):
        v = guard(case, answer)
        assert v.violations == () and not v.auto_send


def test_models_disagree_comes_from_all_variants() -> None:
    case = _plain_case()
    agree = guard(case, _answer("APPROVE_REFUND"), {"base": "APPROVE_REFUND", "finetuned": "APPROVE_REFUND"})
    assert agree.auto_send
    differ = guard(case, _answer("APPROVE_REFUND"), {"base": "DENY", "finetuned": "APPROVE_REFUND"})
    assert "MODELS_DISAGREE" in differ.flags and not differ.auto_send
    invalid_peer = guard(case, _answer("APPROVE_REFUND"), {"base": None, "finetuned": "APPROVE_REFUND"})
    assert "MODELS_DISAGREE" in invalid_peer.flags


def test_plain_answer_dict_is_accepted() -> None:
    case = _plain_case()
    assert guard(case, {"decision": "APPROVE_REFUND"}).auto_send


def _with_text(decision: str, customer_response: str, next_action: str = "Refund on receipt.",
               reasoning: str = "RET-3: defective, 5 days since delivery.") -> ModelAnswer:
    answer = _answer(decision)
    body = {**(answer.answer or {}), "customer_response": customer_response, "next_action": next_action,
            "reasoning": reasoning}
    return ModelAnswer(**{**answer.__dict__, "answer": body})


def test_a_misstated_sum_to_the_customer_is_flagged_and_never_auto_sent() -> None:
    case = _plain_case()  # 129.99 USD, delivered 5 days ago
    right = guard(case, _with_text("APPROVE_REFUND", "Refund of 129.99 USD for the wireless headphones."))
    assert right.flags == () and right.auto_send
    wrong = guard(case, _with_text("APPROVE_REFUND", "Your refund of 80.00 USD for the wireless headphones."))
    assert wrong.flags == ("FACTS_MISSTATED",) and wrong.violations == () and not wrong.auto_send
    late = guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones refund is on its way.",
                                  next_action="Refund: delivered 50 days ago, check the window."))
    assert late.flags == ("FACTS_MISSTATED",)
    for sent in ("Your wireless headphones: refunded under the rules in UK.",  # the case is in US
                 "Your wireless headphones: refunded less a 20% restocking fee."):
        assert guard(case, _with_text("APPROVE_REFUND", sent)).flags == ("FACTS_MISSTATED",), sent
    assert guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones: refunded in US, as the "
                                  "14-day right of UK/EU does not apply.")).auto_send
    # the reasoning is for reviewers (the consistency check), not sent: no flag
    internal = guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones refund is on its way.",
                                      reasoning="RET-3: defective, 50 days since delivery."))
    assert internal.auto_send


def test_a_decision_the_rule_engine_does_not_give_is_held_back_even_without_a_violation() -> None:
    case = _plain_case()  # RET-3: APPROVE_REFUND
    for decision, step in (("APPROVE_EXCHANGE", "Ship the exchange."), ("ESCALATE", "Hand to a supervisor.")):
        v = guard(case, _with_text(decision, "Your wireless headphones: see below.", next_action=step))
        assert v.violations == () and v.flags == () and not v.auto_send, decision
        assert v.held_back == ("decision_not_expected",)
    data = copy.deepcopy(tiny_cases()[0])
    data.update(request_type="cancellation", reason="changed_mind")
    data["order"].update(status="processing", days_since_delivery=None)
    cancel = parse_case(data)  # CAN-1: a processing order is cancelled
    denied = guard(cancel, _with_text("DENY", "We cannot cancel your wireless headphones order.",
                                      next_action="Tell the customer the order ships as planned."))
    assert denied.expected_decision == "APPROVE_CANCELLATION" and denied.violations == ()
    assert denied.held_back == ("decision_not_expected",) and not denied.auto_send
    # both reasons at once, in HELD_BACK_CODES order
    both = guard(case, _with_text("ESCALATE", "Sorry."))  # next action "Refund on receipt."
    assert both.held_back == ("decision_not_expected", "item_not_named", "next_action_mismatch")


def test_unfit_sent_text_is_never_auto_sent_and_says_why() -> None:
    """What the customer reads must name the item and read as prose; the reasoning is the reviewers'."""
    case = _plain_case()  # the item: "Wireless headphones"
    fit = guard(case, _with_text("APPROVE_REFUND", "Sorry: your WIRELESS HEADPHONES will be refunded."))
    assert fit.auto_send and fit.held_back == ()
    vague = guard(case, _with_text("APPROVE_REFUND", "We are sorry: your order will be refunded."))
    assert vague.held_back == ("item_not_named",) and not vague.auto_send and vague.needs_human
    assert vague.flags == () and vague.violations == ()  # not a flag: bulk approval of decisions is unchanged
    looping = guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones refund, your wireless "
                                                       "headphones refund, your wireless headphones refund."))
    assert looping.held_back == ("repeated_fragment",) and not looping.auto_send
    leaking = guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones will be refunded.",
                                     next_action='"next_action": refund'))
    assert leaking.held_back == ("garbled_text",) and not leaking.auto_send
    closing = guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones will be refunded.",
                                     next_action="Close the request."))  # an approval's step is not a close
    assert closing.held_back == ("next_action_mismatch",) and not closing.auto_send
    # the bundled adapter's kind of answer: right decision, garbled response without the item
    bundled = guard(case, _with_text("APPROVE_REFUND", "I'm sorry, butside thsoror with no fee."))
    assert bundled.held_back == ("item_not_named",) and not bundled.auto_send
    # only the reasoning loops: reviewers see it (consistency), the customer does not, so it may be sent
    assert guard(case, _with_text("APPROVE_REFUND", "Your wireless headphones will be refunded.",
                                  reasoning="RET-3 RET-3 RET-3 RET-3 RET-3 RET-3 RET-3 RET-3.")).auto_send
    # an invalid answer has no text to judge: not auto-sent, no text issue either
    assert guard(case, _answer(None, status="invalid")).held_back == ()


def test_facts_misstated_keeps_the_flags_order() -> None:
    from policies import FLAGS

    data = copy.deepcopy(tiny_cases()[0])
    data["message"] = "Refund me or I will call my lawyer."
    v = guard(parse_case(data), _with_text("APPROVE_REFUND", "A refund of £5."), {"base": "DENY",
                                                                              "finetuned": "APPROVE_REFUND"})
    assert v.flags == ("MODELS_DISAGREE", "LEGAL_THREAT", "FACTS_MISSTATED")
    assert list(v.flags) == [f for f in FLAGS if f in v.flags]
