"""policies.facts: what an answer's text states about its case, against the case and the policy.

The rule engine's reference answers (the training data's text) state nothing false for any rule; each
kind of misstated fact is found in a crafted text; a human's own words with the policy's numbers pass.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from policies import parse_case
from policies.catalog import TARGETS
from policies.facts import FACT_KINDS, misstated_facts, policy_day_counts, region_statements
from policies.synth import sample_case
from policies.synth_text import reference_answer
from tests.conftest import make_case

ROOT = Path(__file__).resolve().parents[2]
# US, changed_mind, opened electronics, 12 days, 129.99 USD, no claims: RET-11 (fee 19.50, net 110.49).
CASE = make_case("C-FACTS")


def _in_uk(case):
    data = case.to_json_dict()
    return parse_case({**data, "region": "UK", "order": {**data["order"], "currency": "GBP"}})


def _kinds(text: str, field: str = "reasoning", case=CASE) -> list[str]:
    return [m.kind for m in misstated_facts(case, {field: text})]


def test_no_reference_answer_misstates_a_fact():
    rng = random.Random(15)
    for i, target in enumerate(TARGETS * 8):
        case = sample_case(rng, target, f"C-{i:06d}")
        answer = reference_answer(case).model_dump(mode="json")
        assert misstated_facts(case, answer) == [], (target, answer)


def test_no_answer_of_the_frozen_sets_misstates_a_fact():
    for name in ("validation", "validation_independent", "eval", "stress"):
        for line in (ROOT / "data" / "generated" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert misstated_facts(parse_case(row["input"]), row["output"]) == [], row["id"]


def test_a_human_correction_with_the_policys_numbers_passes():
    answer = {"reasoning": "RET-11 applies: opened electronics returned on day 12 (window 15 days; the "
                           "14-day statutory right is UK/EU only; 365-day warranty).",
              "customer_response": "We can take the wireless headphones back: 110.49 USD after the "
                                   "$19.50 restocking fee, within 5-10 business days (the 500 USD limit "
                                   "is not reached; USD 129.99 paid).",
              "next_action": "Refund on receipt; the customer has 0 claims, under the 3 that flag fraud."}
    assert misstated_facts(CASE, answer) == []


@pytest.mark.parametrize(("text", "kind"), [
    ("change of mind 21 days since delivery", "days"),  # the case's day count, wrong
    ("returned 40 days after the delivery", "days"),
    ("it was delivered 3 days ago", "days"),
    ("returned on day 13", "days"),
    ("beyond the 90-day window", "days"),  # no day count of the policy or the case
    ("within the 730-day warranty", "days"),  # the UK/EU warranty, not the US one
    ("a refund of 120.00 USD", "amount"),  # not the price, the net, the fee or the limit
    ("a refund of £129.99", "amount"),  # the wrong currency
    ("above the EUR 500 limit", "amount"),
    ("a refund of $130.99", "amount"),
    ("the customer has 2 claims in the last 12 months", "claims"),
    ("change of mind on day 12 in UK", "region"),  # the case is in US
    ("refunds in the United Kingdom are", "region"),
    ("within the EU region's rules", "region"),
    ("it is under the AU AUTO_LIMIT", "region"),
    ("a 20% restocking fee", "percent"),
    ("we refund 80 percent of the price", "percent"),
])
def test_each_kind_of_misstated_fact_is_found(text: str, kind: str):
    assert _kinds(text) == [kind]
    assert _kinds(text, "customer_response") == [kind]


def test_a_promise_is_not_a_fact_of_the_case_or_the_policy():
    assert _kinds("We'll reply within 2 days; the refund takes 5-10 business days or 3-5 days.",
                  "customer_response") == []
    assert _kinds("a 2-day window") == ["days"] == _kinds("a return window of 20 days")
    assert _kinds("the 90 days warranty") == ["days"]


def test_a_region_is_checked_when_said_of_the_case_not_as_a_scope():
    assert _kinds("delivered 12 days ago in US, under the US AUTO_LIMIT of 500.00 USD") == []
    assert _kinds("in the United States, region: US") == []
    assert _kinds("the region is UK") == ["region"]
    assert _kinds("see Region UK and Region EU of the policy") == []  # section titles
    for scope in ("the 14-day statutory right applies in UK/EU only", "only in UK and EU",
                  "not a statutory right outside UK/EU (US)", "the right does not apply in the UK",
                  "unlike in the EU, no statutory right", "applies in UK, EU or AU"):
        assert _kinds(scope) == [], scope
    assert _kinds("prices in USD; a refund in AUD") == []  # currencies are not regions
    assert _kinds("in ca. 3 days") == []  # a code counts in capitals only
    uk = _in_uk(CASE)
    assert _kinds("change of mind on day 12 in UK", case=uk) == []
    assert _kinds("change of mind on day 12 in US", case=uk) == ["region"]


def test_a_region_is_read_in_lower_case_names_and_as_an_adjective():
    uk = _in_uk(CASE)
    for said in ("delivered in the united kingdom", "under UK consumer law", "under British law",
                 "as British customers have 14 days", "the uk region", "in Great Britain"):
        assert _kinds(said, case=uk) == [], said
    for said in ("delivered in canada", "under Australian Consumer Law", "European rules give 14 days",
                 "under EU law", "as an American customer", "in the european union"):
        assert _kinds(said, case=uk) == ["region"], said
    for scope in ("under British or European law", "unlike Australian law", "UK/EU law"):
        assert _kinds(scope, case=uk) == [], scope
    # Codes stay capitals only; an adjective says nothing of the case before other nouns.
    assert _kinds("let us know in us dollars; in ca. 3 days", case=uk) == []
    assert _kinds("paid by American Express; a European brand", case=uk) == []
    said = region_statements("Under australian consumer law, and in the EU region")
    assert [(s.region, s.quote) for s in said] == [("AU", "australian consumer law"), ("EU", "in the EU")]


def test_a_percentage_must_be_one_of_the_policys():
    assert _kinds("a 15% restocking fee, so 85% is refunded; NEAR_LIMIT above 90%, 100 percent") == []
    assert _kinds("a 15 % fee and a 12.5% discount") == ["percent"]


def test_a_day_count_is_checked_against_the_case_and_a_case_without_one():
    assert _kinds("delivered 12 days ago, within the 15-day window") == []
    assert _kinds("delivered 9 days ago") == ["days"]  # one statement, though two patterns read it
    unknown = make_case("C-FACTS-GEN1", days_since_delivery=None)
    assert _kinds("12 days since delivery", case=unknown) == ["days"]  # a day count the case lacks
    assert _kinds("the 15-day window", case=unknown) == []


def test_amounts_match_to_the_cent_or_as_whole_numbers():
    assert _kinds("a refund of 129.99 USD") == []
    assert _kinds("a refund of about $130") == []  # rounded up
    assert _kinds("a refund of 129 USD") == []  # rounded down
    assert _kinds("a refund of 1,299.00 USD") == ["amount"]
    big = make_case("C-FACTS-BIG", price=1299.0)
    assert _kinds("the refund of 1,299.00 USD is above the US AUTO_LIMIT of 500.00 USD", case=big) == []


def test_the_policy_day_counts_depend_on_the_region():
    assert policy_day_counts(CASE) == {14, 15, 30, 45, 60, 365}
    uk = _in_uk(CASE)
    assert 730 in policy_day_counts(uk) and 365 not in policy_day_counts(uk)


def test_a_misstatement_names_its_field_quote_and_the_truth():
    found = misstated_facts(CASE, {"reasoning": "ok", "customer_response": "Your refund of 99.00 USD.",
                                   "next_action": "delivered 30 days ago"})
    assert [(m.kind, m.field, m.quote) for m in found] == [
        ("amount", "customer_response", "99.00 USD"), ("days", "next_action", "30 days ago")]
    assert "the price 129.99" in found[0].true and "12 days since delivery" in str(found[1])
    assert {m.kind for m in found} <= set(FACT_KINDS)
