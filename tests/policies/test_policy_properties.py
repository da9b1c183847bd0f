"""Properties over every valid case (hypothesis): the engine never crashes and agrees with itself."""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import DECISIONS, FLAGS, VIOLATION_CODES, check, expected_decision, flags, parse_case
from policies.schema import CATEGORIES, CURRENCY_OF_REGION, REASONS_BY_REQUEST_TYPE, REGIONS, TIERS
from policies.synth import reference_answer
from policies.text import IDENTIFIER_PATTERN

_DAYS = st.one_of(st.none(), st.sampled_from((13, 14, 15, 16, 29, 30, 31, 44, 45, 46, 59, 60, 61, 364, 365,
                                              366, 729, 730, 731)), st.integers(0, 100_000))
# What policies/text.py accepts: prose without controls, format characters or separators (\n and \t
# aside, not drawn here); the item one printable line; ids of the identifier pattern.
_PROSE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Zl", "Zp"))
_LINE = st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs"))


@st.composite
def case_dicts(draw: st.DrawFn) -> dict[str, Any]:
    text, line = functools.partial(st.text, _PROSE), functools.partial(st.text, _LINE)
    """Any valid case: reason fits the request type, currency fits the region, days only when delivered."""
    region = draw(st.sampled_from(REGIONS))
    request_type = draw(st.sampled_from(tuple(REASONS_BY_REQUEST_TYPE)))
    status = draw(st.sampled_from(("processing", "shipped", "delivered")))
    return {
        "case_id": draw(st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)),
        "region": region, "request_type": request_type,
        "reason": draw(st.sampled_from(REASONS_BY_REQUEST_TYPE[request_type])),
        "message": draw(text(max_size=300)),
        "customer": {"id": "U-1", "tier": draw(st.sampled_from(TIERS)),
                     "claims_last_12m": draw(st.integers(0, 10_000))},
        "order": {"id": "O-1", "category": draw(st.sampled_from(CATEGORIES)),
                  "item": draw(line(min_size=1, max_size=120).filter(lambda s: not s.isspace())),
                  "price": draw(st.floats(min_value=0.01, max_value=1e9, allow_infinity=False)),
                  "currency": CURRENCY_OF_REGION[region], "final_sale": draw(st.booleans()), "status": status,
                  "days_since_delivery": draw(_DAYS) if status == "delivered" else None,
                  "opened": draw(st.booleans()), "signature_confirmed": draw(st.booleans())},
    }


@settings(max_examples=400, deadline=None)
@given(case_dicts(), st.sampled_from(DECISIONS))
def test_expected_decision_carries_no_violation(data, proposed):
    case = parse_case(data)
    expected = expected_decision(case)
    assert expected.decision in DECISIONS and expected.policy_refs[0] == expected.rule
    assert check(case, expected.decision) == []
    found = check(case, proposed)
    assert found == [code for code in VIOLATION_CODES if code in found]


@settings(max_examples=300, deadline=None)
@given(case_dicts(), st.dictionaries(st.sampled_from(("base", "finetuned")),
                                     st.sampled_from((None, *DECISIONS))))
def test_flags_never_crash(data, decisions):
    found = flags(parse_case(data), decisions)
    assert found == [f for f in FLAGS if f in found]


@settings(max_examples=200, deadline=None)
@given(case_dicts())
def test_reference_answer_fits_the_schema(data):
    case = parse_case(data)
    answer = reference_answer(case)
    expected = expected_decision(case)
    assert (answer.decision, tuple(answer.policy_refs)) == (expected.decision, expected.policy_refs)
