"""Fixtures of the policies tests: ``make_case`` builds a valid case from a few keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from policies import Case, parse_case

CURRENCY = {"US": "USD", "CA": "CAD", "UK": "GBP", "EU": "EUR", "AU": "AUD"}


def case_dict(region: str = "US", request_type: str = "return", reason: str = "defective",
              status: str = "delivered", days: int | None = 5, category: str = "apparel",
              price: float = 50.0, tier: str = "standard", claims: int = 0, final_sale: bool = False,
              opened: bool = False, signed: bool = False, message: str = "Hello, please help with my order.",
              case_id: str = "C-T-1", item: str = "Rain jacket") -> dict[str, Any]:
    """A case as a JSON dict; ``days`` is dropped (null) unless status is delivered."""
    return {
        "case_id": case_id, "region": region, "request_type": request_type, "reason": reason,
        "message": message,
        "customer": {"id": "U-1", "tier": tier, "claims_last_12m": claims},
        "order": {"id": "O-1", "category": category, "item": item, "price": price,
                  "currency": CURRENCY[region], "final_sale": final_sale, "status": status,
                  "days_since_delivery": days if status == "delivered" else None,
                  "opened": opened, "signature_confirmed": signed},
    }


@pytest.fixture
def make_case() -> Callable[..., Case]:
    """``make_case(**kwargs)``: :func:`case_dict` validated into a Case."""
    return lambda **kwargs: parse_case(case_dict(**kwargs))


@pytest.fixture
def make_case_dict() -> Callable[..., dict[str, Any]]:
    return case_dict
