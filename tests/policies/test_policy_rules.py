"""The rule engine against policy-spec.md sections 2 and 4: every rule, every boundary day, LIM-1."""

from __future__ import annotations

import itertools

import pytest

from policies import AUTO_LIMIT, RULE_IDS, expected_decision

FRD1 = dict(request_type="unauthorized_charge", reason="unauthorized")
NR = dict(request_type="not_received", reason="not_received")
CANCEL = dict(request_type="cancellation", reason="changed_mind")

# (deciding rule, case kwargs, expected decision). Prices stay low unless LIM-1 is the point.
RULE_TABLE = [
    ("GEN-1", dict(request_type="return", days=None), "REQUEST_INFO"),
    ("GEN-1", dict(request_type="exchange", reason="changed_mind", days=None), "REQUEST_INFO"),
    ("GEN-1", dict(request_type="warranty", category="electronics", days=None, claims=9), "REQUEST_INFO"),
    ("FRD-1", dict(**FRD1), "ESCALATE"),
    ("FRD-1", dict(**FRD1, status="processing"), "ESCALATE"),
    ("FRD-2", dict(claims=5), "ESCALATE"),
    ("FRD-2", dict(**CANCEL, status="processing", claims=12),
     "ESCALATE"),
    ("FRD-3", dict(**NR, claims=3), "ESCALATE"),
    ("FRD-3", dict(**NR, status="shipped", claims=4), "ESCALATE"),
    ("CAN-1", dict(**CANCEL, status="processing"),
     "APPROVE_CANCELLATION"),
    ("CAN-1", dict(request_type="cancellation", reason="other", status="processing", region="AU"),
     "APPROVE_CANCELLATION"),
    ("CAN-2", dict(**CANCEL, status="shipped", region="UK"),
     "APPROVE_CANCELLATION"),
    ("CAN-2", dict(request_type="cancellation", reason="other", status="shipped", region="EU"),
     "APPROVE_CANCELLATION"),
    ("CAN-3", dict(**CANCEL, status="shipped", region="US"), "DENY"),
    ("CAN-3", dict(**CANCEL, status="delivered", region="UK"), "DENY"),
    ("NRC-1", dict(**NR, status="shipped"), "DENY"),
    ("NRC-1", dict(**NR, status="processing", claims=2), "DENY"),
    ("NRC-2", dict(**NR, signed=True), "ESCALATE"),
    ("NRC-3", dict(**NR), "APPROVE_REFUND"),
    ("WAR-1", dict(request_type="warranty", category="electronics", status="shipped"), "DENY"),
    ("WAR-2", dict(request_type="warranty", category="apparel"), "DENY"),
    ("WAR-2", dict(request_type="warranty", category="beauty", reason="other"), "DENY"),
    ("WAR-3", dict(request_type="warranty", category="electronics", days=366), "DENY"),
    ("WAR-3", dict(request_type="warranty", category="home", days=731, region="UK"), "DENY"),
    ("WAR-4", dict(request_type="warranty", category="electronics", days=365), "APPROVE_REPLACEMENT"),
    ("WAR-4", dict(request_type="warranty", category="home", reason="wrong_item", days=730, region="EU"),
     "APPROVE_REPLACEMENT"),
    ("WAR-4", dict(request_type="warranty", category="home", reason="damaged_in_transit", price=5000.0),
     "APPROVE_REPLACEMENT"),
    ("WAR-5", dict(request_type="warranty", category="home", reason="other"), "ESCALATE"),
    ("WAR-6", dict(request_type="warranty", category="electronics", reason="accidental_damage"), "DENY"),
    ("WAR-6", dict(request_type="warranty", category="electronics", reason="changed_mind"), "DENY"),
    ("RET-1", dict(status="processing"), "DENY"),
    ("RET-1", dict(request_type="exchange", reason="changed_mind", status="shipped"), "DENY"),
    ("RET-2", dict(reason="other"), "ESCALATE"),
    ("RET-2", dict(request_type="exchange", reason="other", days=400), "ESCALATE"),
    ("RET-3", dict(reason="defective", days=30), "APPROVE_REFUND"),
    ("RET-3", dict(request_type="exchange", reason="wrong_item", category="electronics", days=15),
     "APPROVE_EXCHANGE"),
    ("RET-3", dict(reason="damaged_in_transit", tier="vip", days=60), "APPROVE_REFUND"),
    ("RET-4", dict(reason="defective", category="electronics", days=16), "APPROVE_REPLACEMENT"),
    ("RET-4", dict(request_type="exchange", reason="defective", category="home", days=730, region="UK"),
     "APPROVE_REPLACEMENT"),
    ("RET-5", dict(reason="defective", category="apparel", days=31), "DENY"),
    ("RET-5", dict(reason="wrong_item", category="electronics", days=366), "DENY"),
    ("RET-6", dict(reason="accidental_damage", days=1), "DENY"),
    ("RET-7", dict(reason="changed_mind", category="grocery", days=1, region="UK"), "DENY"),
    ("RET-7", dict(reason="changed_mind", category="digital", days=1), "DENY"),
    ("RET-8", dict(reason="changed_mind", region="UK", days=14, final_sale=True), "APPROVE_REFUND"),
    ("RET-8", dict(reason="changed_mind", region="EU", category="electronics", opened=True, days=3),
     "APPROVE_REFUND"),
    ("RET-8", dict(request_type="exchange", reason="changed_mind", region="EU", days=0), "APPROVE_EXCHANGE"),
    ("RET-9", dict(reason="changed_mind", final_sale=True, days=2), "DENY"),
    ("RET-9", dict(reason="changed_mind", final_sale=True, days=15, region="UK"), "DENY"),
    ("RET-10", dict(reason="changed_mind", days=31), "DENY"),
    ("RET-10", dict(reason="changed_mind", category="electronics", days=16, region="EU"), "DENY"),
    ("RET-11", dict(reason="changed_mind", category="electronics", opened=True, days=15),
     "APPROVE_REFUND_WITH_FEE"),
    ("RET-11", dict(request_type="exchange", reason="changed_mind", category="electronics", opened=True),
     "APPROVE_EXCHANGE"),
    ("RET-12", dict(reason="changed_mind", category="electronics", days=15), "APPROVE_REFUND"),
    ("RET-12", dict(request_type="exchange", reason="changed_mind", days=30), "APPROVE_EXCHANGE"),
    ("RET-12", dict(reason="changed_mind", tier="vip", days=60, opened=True), "APPROVE_REFUND"),
]


@pytest.mark.parametrize(("rule", "kwargs", "decision"), RULE_TABLE,
                         ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(RULE_TABLE)])
def test_each_rule_decides(make_case, rule, kwargs, decision):
    expected = expected_decision(make_case(**kwargs))
    assert (expected.rule, expected.decision, expected.policy_refs) == (rule, decision, (rule,))


def test_rule_table_covers_every_deciding_rule():
    assert {rule for rule, _, _ in RULE_TABLE} == set(RULE_IDS) - {"LIM-1"}


# --- boundary days: an oracle written from the spec's numbers, not the module's constants ----------
BOUNDARY_DAYS = (13, 14, 15, 16, 29, 30, 31, 44, 45, 46, 59, 60, 61, 364, 365, 366, 729, 730, 731)
REGIONS = ("US", "CA", "UK", "EU", "AU")
CATEGORIES = ("electronics", "apparel", "home", "beauty", "grocery", "digital")
SPEC_WARRANTY = {"US": 365, "CA": 365, "UK": 730, "EU": 730, "AU": 365}


def _window(category: str, tier: str) -> int:
    return (15 if category == "electronics" else 30) + (30 if tier == "vip" else 0)


def _changed_mind_rule(region: str, category: str, tier: str, days: int) -> str:
    if category in ("grocery", "digital"):
        return "RET-7"
    if region in ("UK", "EU") and days <= 14:
        return "RET-8"
    return "RET-12" if days <= _window(category, tier) else "RET-10"


def _seller_fault_rule(region: str, category: str, tier: str, days: int) -> str:
    if days <= _window(category, tier):
        return "RET-3"
    if category in ("electronics", "home") and days <= SPEC_WARRANTY[region]:
        return "RET-4"
    return "RET-5"


def _warranty_rule(region: str, category: str, days: int) -> str:
    if category not in ("electronics", "home"):
        return "WAR-2"
    return "WAR-3" if days > SPEC_WARRANTY[region] else "WAR-4"


GRID = list(itertools.product(REGIONS, CATEGORIES, ("standard", "vip")))


@pytest.mark.parametrize(("region", "category", "tier"), GRID)
def test_boundary_days_change_of_mind(make_case, region, category, tier):
    for request_type, days in itertools.product(("return", "exchange"), BOUNDARY_DAYS):
        case = make_case(region=region, category=category, tier=tier, request_type=request_type,
                         reason="changed_mind", days=days, price=20.0)
        assert expected_decision(case).rule == _changed_mind_rule(region, category, tier, days), (
            request_type, days)


@pytest.mark.parametrize(("region", "category", "tier"), GRID)
def test_boundary_days_seller_fault(make_case, region, category, tier):
    for reason, days in itertools.product(("defective", "damaged_in_transit", "wrong_item"), BOUNDARY_DAYS):
        case = make_case(region=region, category=category, tier=tier, reason=reason, days=days, price=20.0)
        expected = _seller_fault_rule(region, category, tier, days)
        assert expected_decision(case).rule == expected, (reason, days)


@pytest.mark.parametrize("region", REGIONS)
def test_boundary_days_warranty(make_case, region):
    for category, tier, days in itertools.product(CATEGORIES, ("standard", "vip"), BOUNDARY_DAYS):
        case = make_case(region=region, category=category, tier=tier, request_type="warranty",
                         reason="defective", days=days)
        assert expected_decision(case).rule == _warranty_rule(region, category, days), (category, days)


# --- LIM-1 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("region", REGIONS)
def test_lim1_at_limit_vs_just_above(make_case, region):
    limit = AUTO_LIMIT[region]
    at = expected_decision(make_case(region=region, request_type="not_received", reason="not_received",
                                     price=float(limit)))
    assert (at.decision, at.policy_refs) == ("APPROVE_REFUND", ("NRC-3",))
    above = expected_decision(make_case(region=region, request_type="not_received", reason="not_received",
                                        price=limit + 0.01))
    assert (above.decision, above.policy_refs, above.before_limit) == (
        "ESCALATE", ("NRC-3", "LIM-1"), "APPROVE_REFUND")
    assert above.limit_applied and not at.limit_applied


@pytest.mark.parametrize("region", REGIONS)
def test_lim1_applies_to_refund_with_fee(make_case, region):
    kwargs = dict(region=region, reason="changed_mind", category="electronics", opened=True, days=15)
    at = expected_decision(make_case(price=float(AUTO_LIMIT[region]), **kwargs))
    above = expected_decision(make_case(price=AUTO_LIMIT[region] + 0.01, **kwargs))
    assert at.decision == "APPROVE_REFUND_WITH_FEE"
    assert (above.decision, above.policy_refs, above.before_limit) == (
        "ESCALATE", ("RET-11", "LIM-1"), "APPROVE_REFUND_WITH_FEE")


@pytest.mark.parametrize(("kwargs", "decision", "rule"), [
    (dict(request_type="exchange", reason="defective"), "APPROVE_EXCHANGE", "RET-3"),
    (dict(request_type="warranty", category="electronics"), "APPROVE_REPLACEMENT", "WAR-4"),
    (dict(**CANCEL, status="processing"), "APPROVE_CANCELLATION",
     "CAN-1"),
    (dict(reason="changed_mind", days=40), "DENY", "RET-10"),
])
def test_lim1_leaves_non_refunds_alone(make_case, kwargs, decision, rule):
    expected = expected_decision(make_case(price=99_999.0, **kwargs))
    assert (expected.decision, expected.policy_refs) == (decision, (rule,))
