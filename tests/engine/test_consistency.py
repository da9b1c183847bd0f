"""engine.consistency: the rule engine's reference answers pass; each problem code fires on an answer
crafted to have that one problem (issue 18); a real garbled answer of the fine-tuned model is caught."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.consistency import (
    CONSISTENCY_CODES,
    RULE_DECISIONS,
    SENT_TEXT_CODES,
    consistency_issues,
    names_item,
    sent_text_issues,
)
from policies import Case, expected_decision
from policies.catalog import TARGETS
from policies.synth import sample_case
from policies.synth_text import reference_answer
from tests.conftest import make_case

# US, changed_mind, opened electronics, 12 days, 129.99 USD: RET-11, APPROVE_REFUND_WITH_FEE.
CASE = make_case("C-CONSIST")


def _good(case: Case = CASE) -> dict[str, Any]:
    return reference_answer(case).model_dump(mode="json")


def _codes(answer: dict[str, Any], case: Case = CASE) -> list[str]:
    return [issue.code for issue in consistency_issues(case, answer)]


def test_every_reference_answer_is_consistent():
    rng = random.Random(18)
    for i, target in enumerate(TARGETS * 6):
        case = sample_case(rng, target, f"C-{i:06d}")
        expected = expected_decision(case)
        assert expected.before_limit in RULE_DECISIONS[expected.rule], target  # the map matches the engine
        assert consistency_issues(case, reference_answer(case)) == [], (target, reference_answer(case))
        sent = reference_answer(case).model_dump(include={"customer_response", "next_action"})
        assert sent_text_issues(case, sent, reference_answer(case).decision) == [], (target, sent)


@pytest.mark.parametrize(("item", "text", "named"), [
    ("Wireless headphones", "We will refund your Wireless headphones.", True),
    ("Wireless headphones", "your wireless headphone is on its way", True),  # case and plural aside
    ("Wireless headphones", "WIRELESS-HEADPHONES: refunded", True),  # punctuation aside
    ("E-reader", "your e reader", True),
    ("Cashmere sweater", "the cashmere sweaters you sent back", True),
    ("Dress", "your dresses", True),
    ("Watch", "both watches", True),
    ("Accessories", "the accessory", True),
    ("Wireless headphones", "We will refund your headphones.", False),  # two words: both are needed
    ("Wireless headphones", "your headphones are wireless", False),  # in its own order
    ("Wine case", "Your case needs a colleague's review.", False),
    ("Mattress", "your mattresses", True),
    ("Mattress", "your matt", False),
    ("Smartwatch", "your smart watch", False),  # a word split in two is another name
    ("Sony WH-1000XM5 wireless headphones, black", "your WH-1000XM5 wireless headphones", True),  # 4 of 6
    ("Sony WH-1000XM5 wireless headphones, black", "your wireless headphones", False),  # 2 of 6
    ("Sony WH-1000XM5 wireless headphones, black", "your Sony headphones", False),  # not a run
    ("Olive oil tin", "the olive oil", True),  # 2 of 3
    ("Olive oil tin", "the tin", False),
    ("★★★", "your ★★★ is refunded", True),  # no letters or digits: as written
    ("★★★", "your ★★ is refunded", False),
])
def test_names_item_reads_the_name_as_a_person_writes_it(item, text, named):
    assert names_item(make_case("C-NAME", item=item), text) is named


def test_a_catalogue_title_named_twice_or_shortened_is_fit_to_send():
    case = make_case("C-LONG", item="Sony WH-1000XM5 wireless headphones, black")
    twice = {"customer_response": "Thanks for returning your Sony WH-1000XM5 wireless headphones, black. "
                                  "Once the Sony WH-1000XM5 wireless headphones, black reach us, we refund "
                                  "them less a 15% restocking fee.",
             "next_action": "Email a return label; refund minus the fee on receipt."}
    assert sent_text_issues(case, twice, "APPROVE_REFUND_WITH_FEE") == []
    shortened = {**twice, "customer_response": "Thanks for returning your WH-1000XM5 wireless headphones; we "
                                                 "refund them less a 15% restocking fee once they reach us."}
    assert sent_text_issues(case, shortened, "APPROVE_REFUND_WITH_FEE") == []
    vague = {**twice, "customer_response": "Thanks for returning your headphones; we refund them less a 15% "
                                             "restocking fee once they reach us."}
    assert [i.code for i in sent_text_issues(case, vague, "APPROVE_REFUND_WITH_FEE")] == ["item_not_named"]


def test_a_human_correction_in_its_own_words_is_consistent():
    answer = {"decision": "APPROVE_REFUND_WITH_FEE",
              "reasoning": "RET-11 applies: opened electronics returned on day 12 (window 15 days).",
              "customer_response": "We can take the Wireless headphones back; a 15% restocking fee applies.",
              "next_action": "1) Email a return label 2) refund minus the fee on receipt.",
              "policy_refs": ["RET-11"]}
    assert consistency_issues(CASE, answer) == []


# (the problem, the change to a consistent answer that makes it, every code that change sets off)
CRAFTED = [
    ("refs_not_expected", {"policy_refs": ["RET-11", "RET-3"],
                           "reasoning": "RET-11: opened electronics; RET-3 would have covered a defect."},
     ["refs_not_expected"]),
    ("refs_contradict_decision", {"decision": "DENY", "next_action": "Close the request."},
     ["refs_contradict_decision"]),
    ("refs_disagree_with_reasoning", {"reasoning": "RET-11 applies, not RET-10 (day 12 is in the window)."},
     ["refs_disagree_with_reasoning"]),
    ("rule_not_cited", {"reasoning": "Opened electronics returned within the window."},
     ["refs_disagree_with_reasoning", "rule_not_cited"]),
    ("item_not_named", {"customer_response": "Your return is approved, minus a 15% restocking fee."},
     ["item_not_named"]),
    ("facts_misstated", {"reasoning": "RET-11: change of mind on opened electronics, 21 days since delivery, "
                                      "within the 15-day window: 15% restocking fee. Decision: "
                                      "APPROVE_REFUND_WITH_FEE."},
     ["facts_misstated"]),
    ("next_action_mismatch", {"next_action": "Close the request; nothing to do."}, ["next_action_mismatch"]),
    ("repeated_fragment", {"customer_response": "Your Wireless headphones return is approved. Your "
                                                "Wireless headphones return is approved."},
     ["repeated_fragment"]),
    ("garbled_text", {"next_action": "reasoning"}, ["next_action_mismatch", "garbled_text"]),
]


def test_every_code_is_crafted():
    assert [code for code, _, _ in CRAFTED] == list(CONSISTENCY_CODES)


@pytest.mark.parametrize(("code", "change", "found"), CRAFTED, ids=[c for c, _, _ in CRAFTED])
def test_each_problem_code_fires(code: str, change: dict[str, Any], found: list[str]):
    issues = consistency_issues(CASE, {**_good(), **change})
    assert [i.code for i in issues] == found
    assert all(i.message.endswith(".") and len(i.message) > 20 for i in issues)  # a sentence each


@pytest.mark.parametrize(("code", "change", "found"), CRAFTED, ids=[c for c, _, _ in CRAFTED])
def test_the_sent_text_check_finds_what_the_whole_check_finds_in_the_sent_fields(
        code: str, change: dict[str, Any], found: list[str]):
    """sent_text_issues (the guard's) is the consistency check's SENT_TEXT_CODES on the customer response
    and next action only: every crafted change of a sent field is found by both, with the same message."""
    answer = {**_good(), **change}
    sent = sent_text_issues(CASE, {k: answer[k] for k in ("customer_response", "next_action")},
                            answer["decision"])
    assert [i.code for i in sent] == [c for c in found if c in SENT_TEXT_CODES]
    whole = {i.code: i.message for i in consistency_issues(CASE, answer)}
    assert all(whole[i.code] == i.message for i in sent)


def test_the_sent_text_check_ignores_the_reasoning_and_absent_fields():
    looping = "RET-11 RET-11 applies, RET-11 RET-11 applies, RET-11 RET-11 applies."
    assert "repeated_fragment" in _codes({**_good(), "reasoning": looping})
    assert sent_text_issues(CASE, {"customer_response": _good()["customer_response"]}) == []
    assert sent_text_issues(CASE, {}) == []
    assert [i.code for i in sent_text_issues(CASE, {"next_action": "policy_refs"})] == ["garbled_text"]
    # the next action is judged against a decision only when one is given
    closes = {"next_action": "Close the request."}
    assert sent_text_issues(CASE, closes) == []
    assert [i.code for i in sent_text_issues(CASE, closes, "APPROVE_REFUND")] == ["next_action_mismatch"]


def test_refs_that_contradict_the_reasoning_and_the_guard_are_all_named():
    answer = {**_good(), "decision": "DENY", "policy_refs": ["RET-12"], "next_action": "Close the request.",
              "reasoning": "RET-11: opened electronics within the window."}
    issues = {i.code: i.message for i in consistency_issues(CASE, answer)}
    assert set(issues) == {"refs_not_expected", "refs_contradict_decision", "refs_disagree_with_reasoning"}
    assert "RET-11" in issues["refs_not_expected"]
    assert "APPROVE_REFUND_WITH_FEE" in issues["refs_not_expected"]
    assert "give APPROVE_EXCHANGE, APPROVE_REFUND, not DENY" in issues["refs_contradict_decision"]
    assert "RET-12, which the reasoning does not cite" in issues["refs_disagree_with_reasoning"]
    assert "RET-11, which policy_refs do not list" in issues["refs_disagree_with_reasoning"]


@pytest.mark.parametrize(("decision", "next_action"), [
    ("DENY", "Issue the full refund to the card."),  # a denial that pays out
    ("APPROVE_REFUND_WITH_FEE", "Ship a replacement."),  # the step the decision takes is missing
])
def test_next_action_against_the_decision(decision: str, next_action: str):
    refs = {"DENY": ["RET-10"], "APPROVE_REFUND_WITH_FEE": ["RET-11"]}[decision]
    answer = {**_good(), "decision": decision, "policy_refs": refs, "next_action": next_action,
              "reasoning": f"{refs[0]} applies."}
    assert "next_action_mismatch" in _codes(answer)


@pytest.mark.parametrize(("decision", "next_action"), [
    ("APPROVE_REFUND_WITH_FEE", "Email a prepaid label; reimburse the customer less the fee on receipt."),
    ("APPROVE_REFUND", "Send a return label and give the customer their money back once it arrives."),
    ("APPROVE_CANCELLATION", "Void the order before it ships."),
    ("REQUEST_INFO", "Email the customer for photos of the damage."),
    ("REQUEST_INFO", "Wait for proof of purchase."),
])
def test_a_next_action_in_other_words_takes_the_decisions_step(decision: str, next_action: str):
    assert sent_text_issues(CASE, {"next_action": next_action}, decision) == []


def test_the_specs_next_action_for_not_delivered_is_tracking():
    case = make_case("C-NRC1", status="shipped", days_since_delivery=None)
    case = case.model_copy(update={"request_type": "not_received", "reason": "not_received"})
    assert expected_decision(case).rule == "NRC-1"
    good = _good(case)
    assert consistency_issues(case, good) == []
    assert _codes({**good, "next_action": "Close the request."}, case) == ["next_action_mismatch"]


@pytest.mark.parametrize("field_text", [
    {"next_action": "reasoning"},  # a field name as a field's whole text
    {"next_action": "ESCALATE"},  # a decision
    {"customer_response": "reasoning warranty delivered. Wireless headphones returned"},
    {"customer_response": 'Wireless headphones approved", "next_action": "refund'},
    {"reasoning": "RET-11: opened electronics, not-3: already delivered."},  # a word fused to a rule number
    {"customer_response": "Wireless headphones: refund approved ); UK, w of an order"},
])
def test_garbled_text(field_text: dict[str, str]):
    assert "garbled_text" in _codes({**_good(), **field_text})


@pytest.mark.parametrize("response", [
    "Order O-5512: your Wireless headphones are approved for a refund, less a 15% restocking fee.",
    "Customer U-88: your Wireless headphones are approved for a refund, less a 15% restocking fee.",
    "Re C-CONSIST: your Wireless headphones are approved for a refund, less a 15% restocking fee.",
    "Ticket SR-20931: your Wireless headphones are approved for a refund, less a 15% restocking fee.",
])
def test_an_identifier_before_a_colon_is_not_a_mangled_rule_id(response: str):
    # the case's own ids, and any id with more digits than a rule number, are prose a real model writes
    assert "garbled_text" not in _codes({**_good(), "customer_response": response})
    assert "garbled_text" in _codes({**_good(), "customer_response": response.replace(":", ", not-3:", 1)})


def test_a_garbled_answer_of_the_model_is_caught():
    """The fine-tuned model's answer that reached training data before issue 18 (stress set)."""
    case = make_case("C-ST-00026", price=1299.0)
    answer = {"decision": "APPROVE_REFUND",
              "reasoning": "RET-3: defective item, 8 claims in the last 12: apparel is not of order is "
                           "not-3: not-2: return an an is already that, w that is already delivered is "
                           "already that that that that that that that that that that is already that is "
                           "already delivered.",
              "customer_response": "reasoning warranty delivered. ", "next_action": "reasoning",
              "policy_refs": ["CAN-2", "RET-3", "CAN-3"]}
    # CAN-2, RET-3, CAN-3 can give APPROVE_REFUND (RET-3): the one check it passes
    assert set(_codes(answer, case)) == set(CONSISTENCY_CODES) - {"refs_contradict_decision"}


def test_the_bundled_models_misstated_day_count_is_caught():
    """The fine-tuned model's answer in the README's case view (demo case C-DE-00005: AU, a suit,
    delivered 314 days ago): the right decision and rule, a day count the case does not have."""
    case = make_case("C-DE-00005", days_since_delivery=314, category="apparel", item="Suit", price=732.34)
    answer = {"decision": "DENY", "policy_refs": ["RET-10"],
              "reasoning": "RET-10: change of mind 365 days after delivery, beyond the 30-day window. "
                           "Decision: DENY.",
              "customer_response": "I'm sorry, but your suit is outside the return window for "
                                   "change-of-mind returns.",
              "next_action": "Close the request; outside the return window."}
    case = case.model_copy(update={"reason": "changed_mind"})
    issues = consistency_issues(case, answer)
    assert [i.code for i in issues] == ["facts_misstated"]
    assert "'365 days after delivery'" in issues[0].message and "314 days" in issues[0].message
