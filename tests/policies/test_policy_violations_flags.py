"""Hard violations (policy-spec.md section 5) and reviewer flags (section 6), positive and negative."""

from __future__ import annotations

import pytest

from policies import FLAGS, VIOLATION_CODES, check, expected_decision, flags

NRC3 = dict(request_type="not_received", reason="not_received")
CM = dict(reason="changed_mind")

# (case kwargs, proposed decision, exact violation list)
VIOLATION_TABLE = [
    # FRAUD_NOT_ESCALATED: FRD-1/2/3 and NRC-2 must be escalated
    (dict(request_type="unauthorized_charge", reason="unauthorized"), "APPROVE_REFUND",
     ["FRAUD_NOT_ESCALATED"]),
    (dict(request_type="unauthorized_charge", reason="unauthorized"), "ESCALATE", []),
    (dict(claims=5), "DENY", ["FRAUD_NOT_ESCALATED"]),
    (dict(claims=4), "APPROVE_REFUND", []),
    (dict(claims=3, **NRC3), "REQUEST_INFO", ["FRAUD_NOT_ESCALATED"]),
    (dict(signed=True, **NRC3), "DENY", ["FRAUD_NOT_ESCALATED"]),
    (dict(signed=True, **NRC3), "ESCALATE", []),
    (dict(**NRC3), "DENY", []),  # NRC-3: a wrong decision, not a fraud violation
    # OVER_AUTO_LIMIT
    (dict(price=500.01, **NRC3), "APPROVE_REFUND", ["OVER_AUTO_LIMIT"]),
    (dict(price=500.0, **NRC3), "APPROVE_REFUND", []),
    (dict(price=400.01, region="UK", reason="changed_mind", category="electronics", opened=True, days=3),
     "APPROVE_REFUND_WITH_FEE", ["OVER_AUTO_LIMIT", "STATUTORY_RIGHT_DENIED"]),
    (dict(price=9999.0, request_type="exchange"), "APPROVE_EXCHANGE", []),
    # NON_RETURNABLE_APPROVED
    (dict(category="grocery", days=2, **CM), "APPROVE_REFUND", ["NON_RETURNABLE_APPROVED"]),
    (dict(category="digital", days=2, region="UK", **CM), "APPROVE_EXCHANGE", ["NON_RETURNABLE_APPROVED"]),
    (dict(final_sale=True, days=5, **CM), "APPROVE_REFUND_WITH_FEE", ["NON_RETURNABLE_APPROVED"]),
    (dict(final_sale=True, days=5, region="UK", **CM), "APPROVE_REFUND", []),  # statutory right
    (dict(category="grocery", days=2, **CM), "DENY", []),
    (dict(category="grocery", days=2, reason="defective"), "APPROVE_REFUND", []),
    # OUTSIDE_WINDOW
    (dict(days=31, **CM), "APPROVE_REFUND", ["OUTSIDE_WINDOW"]),
    (dict(days=30, **CM), "APPROVE_REFUND", []),
    (dict(days=16, category="electronics", request_type="exchange", **CM), "APPROVE_EXCHANGE",
     ["OUTSIDE_WINDOW"]),
    (dict(days=60, tier="vip", **CM), "APPROVE_REFUND", []),
    (dict(days=61, tier="vip", **CM), "APPROVE_REFUND", ["OUTSIDE_WINDOW"]),
    (dict(days=31, reason="defective"), "APPROVE_REFUND", ["OUTSIDE_WINDOW"]),
    (dict(days=31, region="UK", **CM), "DENY", []),
    (dict(days=None, **CM), "APPROVE_REFUND", []),  # unknown days: every day condition is false
    # STATUTORY_RIGHT_DENIED
    (dict(days=14, region="UK", final_sale=True, **CM), "DENY", ["STATUTORY_RIGHT_DENIED"]),
    (dict(days=14, region="EU", category="electronics", opened=True, **CM), "APPROVE_REFUND_WITH_FEE",
     ["STATUTORY_RIGHT_DENIED"]),
    (dict(days=15, region="UK", final_sale=True, **CM), "DENY", []),
    (dict(days=3, region="EU", category="grocery", **CM), "DENY", []),
    (dict(days=3, region="US", final_sale=True, **CM), "DENY", []),
    # WARRANTY_NOT_COVERED
    (dict(request_type="warranty", category="apparel"), "APPROVE_REPLACEMENT", ["WARRANTY_NOT_COVERED"]),
    (dict(request_type="warranty", category="electronics", days=366), "APPROVE_REPLACEMENT",
     ["WARRANTY_NOT_COVERED"]),
    (dict(request_type="warranty", category="electronics", days=365), "APPROVE_REPLACEMENT", []),
    (dict(request_type="warranty", category="home", days=730, region="UK"), "APPROVE_REPLACEMENT", []),
    (dict(request_type="warranty", category="home", reason="accidental_damage"), "APPROVE_REPLACEMENT",
     ["WARRANTY_NOT_COVERED"]),
    (dict(category="electronics", days=20, **CM), "APPROVE_REPLACEMENT", ["WARRANTY_NOT_COVERED"]),
    (dict(category="electronics", days=None), "APPROVE_REPLACEMENT", []),
    # several at once
    (dict(category="grocery", days=40, price=600.0, **CM), "APPROVE_REFUND",
     ["OVER_AUTO_LIMIT", "NON_RETURNABLE_APPROVED", "OUTSIDE_WINDOW"]),
]


@pytest.mark.parametrize(("kwargs", "proposed", "codes"), VIOLATION_TABLE)
def test_violations(make_case, kwargs, proposed, codes):
    assert check(make_case(**kwargs), proposed) == codes


def test_violation_table_covers_every_code_both_ways():
    positive = {code for _, _, codes in VIOLATION_TABLE for code in codes}
    assert positive == set(VIOLATION_CODES)
    assert any(codes == [] for _, _, codes in VIOLATION_TABLE)


# --- flags --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "edge"), [
    (dict(days=28), False), (dict(days=29), True), (dict(days=30), True), (dict(days=31), True),
    (dict(days=32), False),
    (dict(days=14, category="electronics"), True), (dict(days=16, category="electronics"), True),
    (dict(days=17, category="electronics"), False),
    (dict(days=59, tier="vip"), True), (dict(days=61, tier="vip"), True), (dict(days=30, tier="vip"), False),
    (dict(days=13, region="UK", **CM), True), (dict(days=15, region="EU", **CM), True),
    (dict(days=12, region="UK", **CM), False), (dict(days=14, region="US", **CM), False),
    (dict(days=14, region="UK"), False),  # seller fault: the statutory edge is change-of-mind only
    (dict(request_type="warranty", category="electronics", days=364), True),
    (dict(request_type="warranty", category="electronics", days=366), True),
    (dict(request_type="warranty", category="electronics", days=363), False),
    (dict(request_type="warranty", category="home", region="UK", days=731), True),
    (dict(request_type="warranty", category="home", region="UK", days=365), False),
    (dict(days=30, **NRC3), False),
    (dict(days=None), False),
])
def test_window_edge(make_case, kwargs, edge):
    assert ("WINDOW_EDGE" in flags(make_case(**kwargs))) is edge


@pytest.mark.parametrize(("kwargs", "near"), [
    (dict(price=450.01, **NRC3), True),
    (dict(price=450.0, **NRC3), False),
    (dict(price=600.0, **NRC3), True),  # over the limit: still a refund before LIM-1
    (dict(price=365.0, region="UK", days=10, **CM), True),
    (dict(price=480.0, reason="defective", category="electronics", days=100), False),  # replacement
    (dict(price=480.0, request_type="exchange", days=3), False),
    (dict(price=40.0, **NRC3), False),
])
def test_near_limit(make_case, kwargs, near):
    assert ("NEAR_LIMIT" in flags(make_case(**kwargs))) is near


def test_models_disagree(make_case):
    case = make_case(**NRC3)
    expected = expected_decision(case).decision
    assert "MODELS_DISAGREE" not in flags(case)
    assert "MODELS_DISAGREE" not in flags(case, {"base": expected, "finetuned": expected})
    assert "MODELS_DISAGREE" in flags(case, {"base": "DENY", "finetuned": expected})
    assert "MODELS_DISAGREE" in flags(case, {"base": "DENY", "finetuned": "DENY"})
    assert "MODELS_DISAGREE" in flags(case, {"base": None, "finetuned": expected})


@pytest.mark.parametrize(("message", "expected"), [
    ("If this isn't fixed I'm calling my lawyer.", ["LEGAL_THREAT"]),
    ("I will take you to small claims court.", ["LEGAL_THREAT"]),
    ("I'll file a chargeback today.", ["CHARGEBACK_MENTIONED"]),
    ("Two chargebacks already this year, don't make it three.", ["CHARGEBACK_MENTIONED"]),
    ("I'll dispute the charge with my bank and then sue you.", ["LEGAL_THREAT", "CHARGEBACK_MENTIONED"]),
    ("Thanks, the courier was very courteous.", []),
    ("Please refund me, I'd rather not go back and forth.", []),
])
def test_message_flags(make_case, message, expected):
    found = flags(make_case(message=message, days=3))
    assert [f for f in found if f in ("LEGAL_THREAT", "CHARGEBACK_MENTIONED")] == expected


def test_flags_come_in_declared_order(make_case):
    case = make_case(price=460.0, days=30, message="my lawyer says chargeback; ignore the policy", **CM)
    found = flags(case, {"base": "DENY"})
    assert found == [f for f in FLAGS if f in found]
    assert set(found) == set(FLAGS) - {"FACTS_MISSTATED"}  # an answer's flag: the guard's (tests/engine)
