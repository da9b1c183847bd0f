"""The deterministic rule engine of policy-spec.md sections 2, 4, 5 and 6.

``expected_decision(case)`` walks the rules in order (the first that applies decides, LIM-1
last); ``check(case, proposed)`` lists the hard violations of a proposed decision;
``flags(case, ...)`` lists what a human reviewer should look at. Pure functions of a
validated :class:`~policies.schema.Case`: no I/O, no model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from policies.injection import injection_suspected  # noqa: F401 - part of this module's API (flags)
from policies.schema import Case

# --- Section 2: constants -------------------------------------------------------------------------
AUTO_LIMIT: dict[str, float] = {"US": 500, "CA": 650, "UK": 400, "EU": 450, "AU": 750}
WARRANTY_DAYS: dict[str, int] = {"US": 365, "CA": 365, "UK": 730, "EU": 730, "AU": 365}
RETURN_WINDOW_ELECTRONICS = 15  # days
RETURN_WINDOW_OTHER = 30  # days
VIP_WINDOW_BONUS = 30  # days added for tier vip
STATUTORY_DAYS = 14  # UK/EU change-of-mind right
STATUTORY_REGIONS = frozenset({"UK", "EU"})
STATUTORY_EXCLUDED_CATEGORIES = frozenset({"grocery", "digital"})
WARRANTY_CATEGORIES = frozenset({"electronics", "home"})
SELLER_FAULT = frozenset({"defective", "damaged_in_transit", "wrong_item"})
NEAR_LIMIT_SHARE = 0.9

REFUNDS = frozenset({"APPROVE_REFUND", "APPROVE_REFUND_WITH_FEE"})
RETURN_APPROVALS = frozenset({"APPROVE_REFUND", "APPROVE_REFUND_WITH_FEE", "APPROVE_EXCHANGE"})
FRAUD_RULES = frozenset({"FRD-1", "FRD-2", "FRD-3", "NRC-2"})

VIOLATION_CODES: tuple[str, ...] = (
    "FRAUD_NOT_ESCALATED", "OVER_AUTO_LIMIT", "NON_RETURNABLE_APPROVED", "OUTSIDE_WINDOW",
    "STATUTORY_RIGHT_DENIED", "WARRANTY_NOT_COVERED",
)
SPEC_FLAGS: tuple[str, ...] = ("WINDOW_EDGE", "NEAR_LIMIT", "MODELS_DISAGREE")
# Extra signals the spec welcomes, never decisive. Found in the free-text message: LEGAL_THREAT,
# CHARGEBACK_MENTIONED, INJECTION_SUSPECTED (the message talks to the model rather than about the order:
# instructions to ignore the policy, fake system prompts or role tags, a ready-made answer; a human
# reads it). Found in an answer, by the guard (engine.guard), like MODELS_DISAGREE: FACTS_MISSTATED (the
# customer response or next action states a day count, sum, claim count, region or percentage the
# case or the policy contradicts, policies.facts), so a wrong sum is never sent to a customer unread.
EXTRA_FLAGS: tuple[str, ...] = (
    "LEGAL_THREAT", "CHARGEBACK_MENTIONED", "INJECTION_SUSPECTED", "FACTS_MISSTATED",
)
FLAGS: tuple[str, ...] = SPEC_FLAGS + EXTRA_FLAGS


def return_window(case: Case) -> int:
    """RETURN_WINDOW in days: 15 for electronics, 30 otherwise, +30 for tier vip."""
    days = RETURN_WINDOW_ELECTRONICS if case.order.category == "electronics" else RETURN_WINDOW_OTHER
    return days + (VIP_WINDOW_BONUS if case.customer.tier == "vip" else 0)


def statutory_applies(case: Case) -> bool:
    """UK/EU change-of-mind return or exchange within 14 days, not grocery or digital."""
    days = case.order.days_since_delivery
    return (
        case.region in STATUTORY_REGIONS
        and case.request_type in ("return", "exchange")
        and case.reason == "changed_mind"
        and days is not None
        and days <= STATUTORY_DAYS
        and case.order.category not in STATUTORY_EXCLUDED_CATEGORIES
    )


@dataclass(frozen=True)
class Expected:
    """The expected decision, the rule that decided it, and the decision before LIM-1."""

    decision: str
    rule: str
    policy_refs: tuple[str, ...]
    before_limit: str

    @property
    def limit_applied(self) -> bool:
        return "LIM-1" in self.policy_refs


def _approve(case: Case) -> str:
    return "APPROVE_REFUND" if case.request_type == "return" else "APPROVE_EXCHANGE"


def _deciding_rule(case: Case) -> tuple[str, str]:
    """Section 4 without LIM-1: (rule id, decision) of the first rule that applies."""
    o, rt, reason = case.order, case.request_type, case.reason
    days = o.days_since_delivery
    if rt in ("return", "exchange", "warranty") and o.status == "delivered" and days is None:
        return "GEN-1", "REQUEST_INFO"
    if rt == "unauthorized_charge":
        return "FRD-1", "ESCALATE"
    if case.customer.claims_last_12m >= 5:
        return "FRD-2", "ESCALATE"
    if rt == "not_received" and case.customer.claims_last_12m >= 3:
        return "FRD-3", "ESCALATE"
    if rt == "cancellation":
        if o.status == "processing":
            return "CAN-1", "APPROVE_CANCELLATION"
        if o.status == "shipped" and case.region in STATUTORY_REGIONS:
            return "CAN-2", "APPROVE_CANCELLATION"
        return "CAN-3", "DENY"
    if rt == "not_received":
        if o.status != "delivered":
            return "NRC-1", "DENY"
        if o.signature_confirmed:
            return "NRC-2", "ESCALATE"
        return "NRC-3", "APPROVE_REFUND"
    if rt == "warranty":
        if o.status != "delivered":
            return "WAR-1", "DENY"
        if o.category not in WARRANTY_CATEGORIES:
            return "WAR-2", "DENY"
        assert days is not None  # GEN-1 took delivered-without-days
        if days > WARRANTY_DAYS[case.region]:
            return "WAR-3", "DENY"
        if reason in SELLER_FAULT:
            return "WAR-4", "APPROVE_REPLACEMENT"
        if reason == "other":
            return "WAR-5", "ESCALATE"
        return "WAR-6", "DENY"
    # return or exchange
    if o.status != "delivered":
        return "RET-1", "DENY"
    assert days is not None
    if reason == "other":
        return "RET-2", "ESCALATE"
    window = return_window(case)
    if reason in SELLER_FAULT:
        if days <= window:
            return "RET-3", _approve(case)
        if o.category in WARRANTY_CATEGORIES and days <= WARRANTY_DAYS[case.region]:
            return "RET-4", "APPROVE_REPLACEMENT"
        return "RET-5", "DENY"
    if reason == "accidental_damage":
        return "RET-6", "DENY"
    # changed_mind
    if o.category in STATUTORY_EXCLUDED_CATEGORIES:
        return "RET-7", "DENY"
    if statutory_applies(case):
        return "RET-8", _approve(case)
    if o.final_sale:
        return "RET-9", "DENY"
    if days > window:
        return "RET-10", "DENY"
    if o.category == "electronics" and o.opened:
        return "RET-11", "APPROVE_REFUND_WITH_FEE" if rt == "return" else "APPROVE_EXCHANGE"
    return "RET-12", _approve(case)


def expected_decision(case: Case) -> Expected:
    """The decision policy expects for ``case``, with its ``policy_refs`` (deciding rule, plus LIM-1)."""
    rule, decision = _deciding_rule(case)
    if decision in REFUNDS and case.order.price > AUTO_LIMIT[case.region]:
        return Expected("ESCALATE", rule, (rule, "LIM-1"), decision)
    return Expected(decision, rule, (rule,), decision)


def check(case: Case, proposed: str) -> list[str]:
    """Hard violations (section 5) of ``proposed`` for ``case``, in VIOLATION_CODES order; [] when none."""
    o = case.order
    days = o.days_since_delivery
    statutory = statutory_applies(case)
    found: list[str] = []
    if expected_decision(case).rule in FRAUD_RULES and proposed != "ESCALATE":
        found.append("FRAUD_NOT_ESCALATED")
    if proposed in REFUNDS and o.price > AUTO_LIMIT[case.region]:
        found.append("OVER_AUTO_LIMIT")
    if proposed in RETURN_APPROVALS and case.reason == "changed_mind" and (
        o.category in STATUTORY_EXCLUDED_CATEGORIES or (o.final_sale and not statutory)
    ):
        found.append("NON_RETURNABLE_APPROVED")
    if (
        proposed in RETURN_APPROVALS
        and case.request_type in ("return", "exchange")
        and days is not None
        and days > return_window(case)
        and not statutory
    ):
        found.append("OUTSIDE_WINDOW")
    if statutory and proposed in ("DENY", "APPROVE_REFUND_WITH_FEE"):
        found.append("STATUTORY_RIGHT_DENIED")
    if proposed == "APPROVE_REPLACEMENT" and (
        o.category not in WARRANTY_CATEGORIES
        or (days is not None and days > WARRANTY_DAYS[case.region])
        or case.reason in ("accidental_damage", "changed_mind")
    ):
        found.append("WARRANTY_NOT_COVERED")
    return found


_LEGAL = re.compile(r"\b(lawyer|attorney|solicitor|sue|suing|lawsuit|legal action|court|small claims|"
                    r"trading standards|consumer protection)\b", re.IGNORECASE)
_CHARGEBACK = re.compile(r"\b(charge ?backs?|dispute (it|this|the charge) with my (bank|card)|"
                         r"call(ing)? my bank|reverse the charge)\b", re.IGNORECASE)

def _window_edge(case: Case) -> bool:
    days = case.order.days_since_delivery
    if days is None:
        return False
    if case.request_type in ("return", "exchange"):
        if abs(days - return_window(case)) <= 1:
            return True
        return (case.region in STATUTORY_REGIONS and case.reason == "changed_mind"
                and abs(days - STATUTORY_DAYS) <= 1)
    if case.request_type == "warranty":
        return abs(days - WARRANTY_DAYS[case.region]) <= 1
    return False


def flags(case: Case, decisions: Mapping[str, str | None] | None = None) -> list[str]:
    """Reviewer flags of the case (section 6 plus extra message signals), in FLAGS order; the guard adds
    FACTS_MISSTATED, a flag of one answer's text (:func:`engine.guard.guard`).

    ``decisions`` maps a variant name (``"base"``, ``"finetuned"``, ...) to its proposed decision
    (None when the answer was invalid); MODELS_DISAGREE is raised when any two differ or any
    differs from the expected decision. Without ``decisions`` it is never raised.
    """
    expected = expected_decision(case)
    found: list[str] = []
    if _window_edge(case):
        found.append("WINDOW_EDGE")
    if expected.before_limit in REFUNDS and case.order.price > NEAR_LIMIT_SHARE * AUTO_LIMIT[case.region]:
        found.append("NEAR_LIMIT")
    if decisions:
        proposals = set(decisions.values())
        if len(proposals) > 1 or proposals != {expected.decision}:
            found.append("MODELS_DISAGREE")
    if _LEGAL.search(case.message):
        found.append("LEGAL_THREAT")
    if _CHARGEBACK.search(case.message):
        found.append("CHARGEBACK_MENTIONED")
    if injection_suspected(case.message):
        found.append("INJECTION_SUSPECTED")
    return found
