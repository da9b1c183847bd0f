"""How much a training pool lets a model cheat: the shortcuts between case fields, measured.

A model should decide from the comparison a rule makes (price against the region's AUTO_LIMIT, days
against the window). When fields travel together in its data — an item's usual price, a rule's
usual day range or categories — it can learn those pairings instead. :func:`correlation_report`
measures that, in bits of mutual information over a pool's cases:

- ``item_price``: I(item; price band | category) — what the item's name says about the price given
  its category. No rule looks at the item's name, so any information here is a shortcut (the
  recipe generator draws each item's price from its usual range).
- ``pairs``: I(a; b) for every pair of case fields (bands for numbers). In a pool balanced over rule
  chains, fields that decide the same rare chain still go together (a RET-11 case is electronics,
  opened and recent by definition); the rest should be near zero.
- ``mean_pair_mi`` and the ``top`` pairs, for a one-line comparison of two pools.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from typing import Any

from policies.rules import AUTO_LIMIT
from policies.schema import Case


def _band(value: float, edges: Sequence[float], labels: Sequence[str]) -> str:
    for edge, label in zip(edges, labels, strict=False):
        if value < edge:
            return label
    return labels[-1]


def price_band(case: Case) -> str:
    """The price against the case's own region's AUTO_LIMIT, in bands around the limit."""
    ratio = case.order.price / AUTO_LIMIT[case.region]
    return _band(ratio, (0.25, 0.5, 0.9, 1.0 + 1e-9, 1.1, 1.6),
                 ("<0.25x", "0.25-0.5x", "0.5-0.9x", "0.9-1x", "1-1.1x", "1.1-1.6x", ">1.6x"))


def days_band(case: Case) -> str:
    days = case.order.days_since_delivery
    if days is None:
        return "none"
    return _band(days, (15, 31, 61, 366, 731), ("0-14", "15-30", "31-60", "61-365", "366-730", ">730"))


def claims_band(case: Case) -> str:
    return _band(case.customer.claims_last_12m, (1, 3, 5), ("0", "1-2", "3-4", "5+"))


FIELDS: dict[str, Callable[[Case], str]] = {
    "region": lambda c: c.region,
    "request_type": lambda c: c.request_type,
    "reason": lambda c: c.reason,
    "category": lambda c: c.order.category,
    "item": lambda c: c.order.item,
    "price_band": price_band,
    "status": lambda c: c.order.status,
    "days_band": days_band,
    "tier": lambda c: c.customer.tier,
    "claims_band": claims_band,
    "final_sale": lambda c: str(c.order.final_sale),
    "opened": lambda c: str(c.order.opened),
    "signature": lambda c: str(c.order.signature_confirmed),
}


def entropy(values: Iterable[Any]) -> float:
    counts = Counter(values)
    n = sum(counts.values())
    return -sum(k / n * math.log2(k / n) for k in counts.values()) if n else 0.0


def mutual_information(xs: Sequence[Any], ys: Sequence[Any]) -> float:
    """I(X; Y) in bits from paired samples (plug-in estimate)."""
    return entropy(xs) + entropy(ys) - entropy(list(zip(xs, ys, strict=True)))


def conditional_mi(xs: Sequence[Any], ys: Sequence[Any], zs: Sequence[Any]) -> float:
    """I(X; Y | Z) in bits: the mutual information within each Z value, weighted by its share."""
    groups: dict[Any, list[int]] = {}
    for i, z in enumerate(zs):
        groups.setdefault(z, []).append(i)
    n = len(zs)
    return sum(len(idx) / n * mutual_information([xs[i] for i in idx], [ys[i] for i in idx])
               for idx in groups.values())


def correlation_report(cases: Sequence[Case], top: int = 8) -> dict[str, Any]:
    """The shortcut figures of a pool (see the module docstring). Raises ValueError for no cases."""
    if not cases:
        raise ValueError("cases: the pool is empty")
    columns = {name: [f(c) for c in cases] for name, f in FIELDS.items()}
    pairs = {f"{a}~{b}": round(mutual_information(columns[a], columns[b]), 4)
             for a, b in combinations(FIELDS, 2)}
    ranked = sorted(pairs.items(), key=lambda kv: -kv[1])
    return {
        "n": len(cases),
        "item_price": round(conditional_mi(columns["item"], columns["price_band"], columns["category"]), 4),
        "mean_pair_mi": round(sum(pairs.values()) / len(pairs), 4),
        "top": dict(ranked[:top]),
        "pairs": pairs,
    }
