"""The policy documents agree with the rule engine: ids, applicable sections, numbers."""

from __future__ import annotations

import re

import pytest

from policies import AUTO_LIMIT, RULE_IDS, WARRANTY_DAYS, applicable_sections, policy_text, rules
from policies.documents import all_sections
from policies.schema import CURRENCY_OF_REGION, REGIONS, REQUEST_TYPES


def _all_text() -> str:
    return "\n".join(s.render() for s in all_sections())


@pytest.mark.parametrize("rule", RULE_IDS)
def test_every_rule_id_is_in_the_documents(rule):
    assert re.search(rf"\b{re.escape(rule)}(?!\d)", _all_text()), rule


def _titles(make_case, **kwargs) -> list[str]:
    return [s.title for s in applicable_sections(make_case(**kwargs))]


def test_uk_return_gets_its_region_and_returns(make_case):
    titles = _titles(make_case, region="UK", request_type="return")
    assert "Region UK" in titles and "Returns and exchanges" in titles
    assert "Region US" not in titles and "Warranty claims" not in titles
    assert titles[0] == "General: missing data" and titles[-1] == "Escalation limits"


@pytest.mark.parametrize(("kwargs", "present", "absent"), [
    (dict(request_type="warranty", category="electronics"), ["Warranty claims", "General: missing data"],
     ["Returns and exchanges", "Cancellations"]),
    (dict(request_type="not_received", reason="not_received"), ["Delivery claims (item not received)"],
     ["General: missing data", "Returns and exchanges"]),
    (dict(request_type="cancellation", reason="other", status="processing"), ["Cancellations"],
     ["Warranty claims", "Delivery claims (item not received)"]),
    (dict(request_type="unauthorized_charge", reason="unauthorized"), ["Fraud screening"],
     ["Returns and exchanges", "Cancellations"]),
])
def test_sections_by_request_type(make_case, kwargs, present, absent):
    titles = _titles(make_case, **kwargs)
    assert set(present) <= set(titles) and not set(absent) & set(titles)


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("request_type", REQUEST_TYPES)
def test_every_case_gets_fraud_limits_and_only_its_region(make_case, region, request_type):
    reason = {"not_received": "not_received", "unauthorized_charge": "unauthorized",
              "cancellation": "other"}.get(request_type, "defective")
    titles = _titles(make_case, region=region, request_type=request_type, reason=reason)
    assert "Fraud screening" in titles and "Escalation limits" in titles
    assert [t for t in titles if t.startswith("Region ")] == [f"Region {region}"]
    assert policy_text(make_case(region=region, request_type=request_type, reason=reason)).startswith("## ")


@pytest.mark.parametrize("region", REGIONS)
def test_regional_numbers_match_constants(region):
    (section,) = [s for s in all_sections() if s.title == f"Region {region}"]
    currency = CURRENCY_OF_REGION[region]
    limit = re.search(r"AUTO_LIMIT: (\d+) (\w+)", section.body)
    assert limit and (float(limit.group(1)), limit.group(2)) == (AUTO_LIMIT[region], currency)
    warranty = re.search(r"WARRANTY_DAYS: (\d+)", section.body)
    assert warranty and int(warranty.group(1)) == WARRANTY_DAYS[region]
    assert f"prices in {currency}" in section.body
    has_statutory = "14 days" in section.body
    assert has_statutory is (region in rules.STATUTORY_REGIONS)


def test_return_window_numbers_match_constants():
    (section,) = [s for s in all_sections() if s.title == "Returns and exchanges"]
    assert f"{rules.RETURN_WINDOW_ELECTRONICS} days for electronics" in section.body
    assert f"{rules.RETURN_WINDOW_OTHER} days for every other category" in section.body
    assert f"plus {rules.VIP_WINDOW_BONUS} days for VIP" in section.body
