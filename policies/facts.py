"""Facts an answer's text states about its case, checked against the case and the policy.

Support agents read the reasoning and the customer response, and an approved answer becomes training
data, so a text that misstates the case ("change of mind 365 days after delivery" on day 314, "a refund
of 80.00 USD" for a 129.99 USD order) is wrong even when its decision is right. :func:`misstated_facts`
finds five kinds of stated fact and checks each:

- ``days``: a day count said of the case ("29 days since delivery", "12 days after delivery", "delivered
  9 days ago", "on day 12") must be the case's ``days_since_delivery`` (a case without one has no day
  count to state); a day count said of the policy ("the 30-day window", "a window of 15 days", "365 days
  warranty") must be the case's or one of the policy's (the return windows, with and without the VIP
  bonus, the statutory 14 days, the region's warranty). A promise ("we'll reply within 2 days", "5-10
  business days") is neither, and is not checked.
- ``amount``: a sum of money with its currency ("744.00 USD", "USD 744", "£400", "$129.99") must be in
  the case's currency and be the price, the price less the 15% restocking fee, the fee itself, or the
  region's AUTO_LIMIT (to the cent, or as a whole number rounded either way).
- ``claims``: a claim count ("4 claims") must be the customer's ``claims_last_12m`` or one of the
  fraud rules' thresholds (3, 5).
- ``region``: a region said of the case ("in UK", "in the united kingdom", "the UK AUTO_LIMIT", "the EU
  region", "region: EU", "under UK law", "Australian Consumer Law", "British customers") must be the
  case's ("Region EU", the policy section's title, is not checked; a code counts in capitals only). A
  region named as a scope ("the 14-day right of UK/EU", "in UK or EU", "outside UK", "not in the EU",
  "unlike in AU") states nothing of the case, and is not checked.
- ``percent``: a percentage ("15%", "15 percent") must be one of the policy's: the 15% restocking fee,
  the 85% it leaves, NEAR_LIMIT's 90% of the AUTO_LIMIT, or 100%.

Only what the text states is checked: a text that states no number or region misstates nothing. Pure
functions of a validated case and the answer's text fields; no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policies.rules import (
    AUTO_LIMIT,
    RETURN_WINDOW_ELECTRONICS,
    RETURN_WINDOW_OTHER,
    STATUTORY_DAYS,
    VIP_WINDOW_BONUS,
    WARRANTY_DAYS,
)
from policies.schema import Case

FACT_KINDS: tuple[str, ...] = ("days", "amount", "claims", "region", "percent")
TEXT_FIELDS: tuple[str, ...] = ("reasoning", "customer_response", "next_action")
RESTOCKING_FEE = 0.15  # policy-spec section 4, RET-11
FRAUD_CLAIM_THRESHOLDS = (3, 5)  # FRD-3 (not-received claims), FRD-2 (any claims)
NEAR_LIMIT_SHARE = 0.9  # policy-spec section 5, NEAR_LIMIT: above 90% of the AUTO_LIMIT
POLICY_PERCENTAGES: frozenset[int] = frozenset({
    round(RESTOCKING_FEE * 100), round((1 - RESTOCKING_FEE) * 100), round(NEAR_LIMIT_SHARE * 100), 100})
# How a text names each region: its code and its names, and the adjective of a name ("British law").
REGION_NAMES: dict[str, tuple[str, ...]] = {
    "US": ("US", "USA", "U.S.", "United States"), "CA": ("CA", "Canada"),
    "UK": ("UK", "U.K.", "United Kingdom", "Great Britain", "Britain"),
    "EU": ("EU", "European Union", "Europe"), "AU": ("AU", "Australia"),
}
REGION_ADJECTIVES: dict[str, str] = {"American": "US", "Canadian": "CA", "British": "UK", "European": "EU",
                                     "Australian": "AU"}

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,9}(?:\.\d+)?"
# A day count said of the case: since/after delivery, ago/back, delivered N days, day N.
_CASE_DAYS = (
    re.compile(r"(?<![\d.,-])(\d{1,6})(?:\s+|-)days?\s+(?:since|after|from|past)\s+(?:the\s+)?deliver\w*",
               re.IGNORECASE),
    re.compile(r"(?<![\d.,-])(\d{1,6})\s+days?\s+(?:ago|back)\b", re.IGNORECASE),
    re.compile(r"\bdelivered\s+(?:only\s+|just\s+)?(\d{1,6})\s+days?\b", re.IGNORECASE),
    re.compile(r"\bon\s+day\s+(\d{1,6})\b", re.IGNORECASE),
)
# A day count said of the policy: "the 30-day window", "window of 15 days", "365 days warranty". A
# promise ("we'll reply within 2 days") is neither the case's nor the policy's, and is not checked.
_PERIOD = r"(?:window|warranty|right|period|return|cooling|guarantee)"
_POLICY_DAYS = (
    re.compile(r"(?<![\d.,-])(\d{1,6})-days?\b", re.IGNORECASE),
    re.compile(rf"(?<![\d.,-])(\d{{1,6}})\s+(?:calendar\s+)?days?(?:'s?)?\s+(?:\w+\s+)?{_PERIOD}",
               re.IGNORECASE),
    re.compile(rf"\b{_PERIOD}\w*\s+(?:of\s+|is\s+|was\s+)?(\d{{1,6}})\s+days?\b", re.IGNORECASE),
)
_CODES = "USD|CAD|GBP|EUR|AUD"
_AMOUNT = re.compile(
    rf"(?P<sym>[$£€])\s?(?P<a>{_NUMBER})"
    rf"|(?<![\w.])(?P<b>{_NUMBER})\s?(?P<code>{_CODES})\b"
    rf"|\b(?P<code2>{_CODES})\s?(?P<c>{_NUMBER})",
)
_SYMBOL_CURRENCIES = {"£": ("GBP",), "€": ("EUR",), "$": ("USD", "CAD", "AUD")}

def _alternation(names: Iterable[str]) -> str:
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


# Codes count in capitals only ("in ca. 3 days" is not Canada, "us" is a pronoun); names in any case.
_CODE = _alternation(n for names in REGION_NAMES.values() for n in names if re.fullmatch(r"[A-Z]{2,3}", n))
_NAME = _alternation(n for names in REGION_NAMES.values() for n in names
                     if not re.fullmatch(r"[A-Z]{2,3}", n))
_REGION = rf"{_CODE}|(?i:{_NAME})"
_ADJECTIVE = rf"(?i:{_alternation(REGION_ADJECTIVES)})(?!\s+(?i:union)\b)"
_REGION_OF = {name.lower(): code for code, names in REGION_NAMES.items() for name in names} | {
    adjective.lower(): code for adjective, code in REGION_ADJECTIVES.items()}
# What a region or its adjective is said of when it is the case's: "the UK AUTO_LIMIT", "UK consumer law",
# "Australian Consumer Law", "British customers".
_OF_THE_CASE = r"(?i:auto[- ]limit|region|(?:consumer\s+)?(?:laws?|rules|regulations)|customers?)\b"
# A region said of the case: "in UK", "in the United Kingdom", "UK AUTO_LIMIT", "the AUTO_LIMIT in UK",
# "the EU region", "region: EU", "the region is EU", "under UK law", "Australian Consumer Law". "Region
# EU" alone is the policy section's title, not a statement of the case.
_REGION_SAID = (
    re.compile(rf"\b(?i:in|within)\s+(?:the\s+)?(?P<r>{_REGION})(?!\w)"),
    re.compile(rf"(?<![\w/])(?P<r>{_REGION})(?:'s)?\s+(?:AUTO_LIMIT|{_OF_THE_CASE})"),
    re.compile(rf"\b(?i:region)(?:\s+is\s+|\s*[:=]\s*)(?:the\s+)?(?P<r>{_REGION})(?!\w)"),
    re.compile(rf"(?<![\w/])(?P<r>{_ADJECTIVE})\s+{_OF_THE_CASE}"),
)
# A region named as a scope, not of the case: "UK/EU", "UK and EU", "outside UK", "not in the EU",
# "British or European law".
_ANY_REGION = rf"{_REGION}|{_ADJECTIVE}"
_REGION_LIST = re.compile(rf"^\s*(?:/|,|&|\band\b|\bor\b)\s*(?:the\s+)?(?:{_ANY_REGION})(?![\w])")
_REGION_LIST_BEFORE = re.compile(rf"(?:{_ANY_REGION})\s*(?:/|,|&|\band|\bor)\s*(?:the\s+)?$")
_REGION_NEGATED = re.compile(r"\b(?:not|outside|unlike|except|but|only|never)\s+(?:\w+\s+)?$", re.IGNORECASE)
_PERCENT = re.compile(r"(?<![\d.,])(\d{1,3}(?:\.\d+)?)\s?(?:%|per\s?cent\b)", re.IGNORECASE)
_CLAIMS = re.compile(r"(?<![\d.,-])(\d{1,4})\s+(?:prior\s+|previous\s+|earlier\s+|past\s+)?claims?\b",
                     re.IGNORECASE)


@dataclass(frozen=True)
class Misstatement:
    """One stated fact the case or the policy contradicts: its ``kind`` (one of :data:`FACT_KINDS`),
    the answer ``field`` it is in, the ``quote`` as written, and what is ``true`` instead."""

    kind: str
    field: str
    quote: str
    true: str

    def __str__(self) -> str:
        return f"{self.field} says {self.quote!r}; {self.true}"


def policy_day_counts(case: Case) -> frozenset[int]:
    """The day counts the policy gives for ``case``'s region: both return windows with and without the
    VIP bonus, the bonus itself, the statutory right and the region's warranty."""
    windows = (RETURN_WINDOW_ELECTRONICS, RETURN_WINDOW_OTHER)
    return frozenset({*windows, *(w + VIP_WINDOW_BONUS for w in windows), VIP_WINDOW_BONUS, STATUTORY_DAYS,
                      WARRANTY_DAYS[case.region]})


def _case_days(case: Case) -> str:
    days = case.order.days_since_delivery
    return "the case gives no day count" if days is None else f"the case has {days} days since delivery"


def _day_misstatements(case: Case, field: str, text: str) -> list[Misstatement]:
    days = case.order.days_since_delivery
    said_of_case = set() if days is None else {days}
    policy = policy_day_counts(case)
    readings = (  # (patterns, the day counts they may state, what is true instead)
        (_CASE_DAYS, said_of_case, _case_days(case)),
        (_POLICY_DAYS, policy | said_of_case,
         f"{_case_days(case)}; the policy's day counts are {', '.join(map(str, sorted(policy)))}"),
    )
    out, read = [], set()
    for patterns, allowed, truth in readings:
        for m in (m for pattern in patterns for m in pattern.finditer(text)):
            if m.start(1) in read:  # "delivered 9 days ago": one statement, two patterns
                continue
            read.add(m.start(1))
            if int(m.group(1)) not in allowed:
                out.append(Misstatement("days", field, m.group(0), truth))
    return out


def _amounts(case: Case) -> dict[str, float]:
    price = case.order.price
    return {"the price": price, "the price less the 15% fee": round(price * (1 - RESTOCKING_FEE), 2),
            "the 15% fee": round(price * RESTOCKING_FEE, 2), "the AUTO_LIMIT": float(AUTO_LIMIT[case.region])}


def _same_amount(said: str, amount: float) -> bool:
    value = float(said.replace(",", ""))
    if "." in said:
        return abs(value - amount) < 0.005
    return value in (math.floor(amount), math.ceil(amount))


def _amount_misstatements(case: Case, field: str, text: str) -> list[Misstatement]:
    out, currency, amounts = [], case.order.currency, _amounts(case)
    known = ", ".join(f"{name} {value:.2f}" for name, value in amounts.items())
    for m in _AMOUNT.finditer(text):
        said = m.group("a") or m.group("b") or m.group("c")
        currencies = _SYMBOL_CURRENCIES[m.group("sym")] if m.group("sym") else (m.group("code") or
                                                                                 m.group("code2"),)
        if currency not in currencies:
            out.append(Misstatement("amount", field, m.group(0), f"the order is in {currency}"))
        elif not any(_same_amount(said, amount) for amount in amounts.values()):
            out.append(Misstatement("amount", field, m.group(0), f"the case's sums are {known} {currency}"))
    return out


def _claim_misstatements(case: Case, field: str, text: str) -> list[Misstatement]:
    claims = case.customer.claims_last_12m
    allowed = {claims, *FRAUD_CLAIM_THRESHOLDS}
    truth = f"the customer has {claims} claims in the last 12 months"
    return [Misstatement("claims", field, m.group(0), truth)
            for m in _CLAIMS.finditer(text) if int(m.group(1)) not in allowed]


@dataclass(frozen=True)
class RegionStatement:
    """A region a text says of its case: the ``region`` code, the ``span`` of its name as written, the
    ``quote`` that says it."""

    region: str
    span: tuple[int, int]
    quote: str


def region_statements(text: str) -> list[RegionStatement]:
    """The regions ``text`` says of its case ("in UK", "the UK AUTO_LIMIT", "region: UK"), in text order;
    a region named as a scope ("UK/EU", "outside UK", "not in the EU") is not one."""
    out, read = [], set()
    for m in (m for pattern in _REGION_SAID for m in pattern.finditer(text)):
        if m.start("r") in read:  # "in the UK region": one statement, two patterns
            continue
        read.add(m.start("r"))
        scope = (_REGION_LIST.match(text[m.end("r"):]) or _REGION_LIST_BEFORE.search(text[:m.start("r")])
                 or _REGION_NEGATED.search(text[max(0, m.start() - 40):m.start()]))
        if not scope:
            out.append(RegionStatement(_REGION_OF[m.group("r").lower()], m.span("r"), m.group(0)))
    return sorted(out, key=lambda said: said.span)


def _region_misstatements(case: Case, field: str, text: str) -> list[Misstatement]:
    truth = f"the case is in {case.region}"
    return [Misstatement("region", field, said.quote, truth)
            for said in region_statements(text) if said.region != case.region]


def _percent_misstatements(field: str, text: str) -> list[Misstatement]:
    known = ", ".join(f"{p}%" for p in sorted(POLICY_PERCENTAGES))
    truth = f"the policy's percentages are {known} (the restocking fee, what it leaves, NEAR_LIMIT, all)"
    return [Misstatement("percent", field, m.group(0), truth)
            for m in _PERCENT.finditer(text) if float(m.group(1)) not in POLICY_PERCENTAGES]


def misstated_facts(case: Case, answer: Mapping[str, str]) -> list[Misstatement]:
    """The facts ``answer``'s text fields (:data:`TEXT_FIELDS`, those present) state about ``case`` that
    the case or the policy contradicts, field by field in text order; [] when none."""
    out: list[Misstatement] = []
    for field in TEXT_FIELDS:
        text = answer.get(field)
        if isinstance(text, str) and text:
            found = (_day_misstatements(case, field, text) + _amount_misstatements(case, field, text)
                     + _claim_misstatements(case, field, text) + _region_misstatements(case, field, text)
                     + _percent_misstatements(field, text))
            out.extend(sorted(found, key=lambda s: text.find(s.quote)))
    return out
