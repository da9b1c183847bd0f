"""Case and answer schemas: every bad input is refused with an error naming the field."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from policies import InvalidAnswer, InvalidCase, parse_answer, parse_case


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        data[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            data = data[key]
        del data[last]
    return mutate


BAD = [
    ("unknown region", _set("region", "FR"), "region"),
    ("unknown request type", _set("request_type", "refund"), "request_type"),
    ("reason not allowed for request type", _set("reason", "unauthorized"), "reason"),
    ("cancellation with defective", lambda d: d.update(request_type="cancellation"), "reason"),
    ("currency not the region's", _set("order.currency", "EUR"), "order.currency"),
    ("unknown currency", _set("order.currency", "JPY"), "order.currency"),
    ("negative price", _set("order.price", -1.0), "order.price"),
    ("zero price", _set("order.price", 0), "order.price"),
    ("NaN price", _set("order.price", float("nan")), "order.price"),
    ("inf price", _set("order.price", float("inf")), "order.price"),
    ("price as string", _set("order.price", "12.5"), "order.price"),
    ("price as bool", _set("order.price", True), "order.price"),
    ("claims as string", _set("customer.claims_last_12m", "12"), "customer.claims_last_12m"),
    ("claims as bool", _set("customer.claims_last_12m", True), "customer.claims_last_12m"),
    ("claims as float", _set("customer.claims_last_12m", 1.5), "customer.claims_last_12m"),
    ("negative claims", _set("customer.claims_last_12m", -1), "customer.claims_last_12m"),
    ("final_sale as int", _set("order.final_sale", 1), "order.final_sale"),
    ("opened as string", _set("order.opened", "true"), "order.opened"),
    ("signature as null", _set("order.signature_confirmed", None), "order.signature_confirmed"),
    ("days as string", _set("order.days_since_delivery", "12"), "order.days_since_delivery"),
    ("negative days", _set("order.days_since_delivery", -1), "order.days_since_delivery"),
    ("days while not delivered", _set("order.status", "shipped"), "order.days_since_delivery"),
    ("unknown tier", _set("customer.tier", "gold"), "customer.tier"),
    ("unknown category", _set("order.category", "toys"), "order.category"),
    ("unknown status", _set("order.status", "lost"), "order.status"),
    ("message too long", _set("message", "x" * 4001), "message"),
    ("message not a string", _set("message", 42), "message"),
    ("case_id as int", _set("case_id", 7), "case_id"),
    ("empty case_id", _set("case_id", ""), "case_id"),
    ("missing reason", _delete("reason"), "reason"),
    ("missing order item", _delete("order.item"), "order.item"),
    ("missing customer", _delete("customer"), "customer"),
    ("extra field", _set("priority", "high"), "priority"),
    ("extra order field", _set("order.colour", "red"), "order.colour"),
]


@pytest.mark.parametrize(("mutate", "field"), [(m, f) for _, m, f in BAD], ids=[name for name, _, _ in BAD])
def test_bad_case_names_the_field(make_case_dict, mutate, field):
    data = copy.deepcopy(make_case_dict(days=12))
    mutate(data)
    with pytest.raises(InvalidCase) as info:
        parse_case(data)
    assert field in info.value.fields
    assert field in str(info.value)


def test_valid_edges_are_accepted(make_case_dict):
    parse_case(make_case_dict(message="x" * 4000))
    parse_case(make_case_dict(price=12))  # an int price is a number
    parse_case(make_case_dict(days=None))  # delivered with unknown days: GEN-1, not a schema error
    parse_case(make_case_dict(status="processing", days=None))


@pytest.mark.parametrize("data", [None, [], "case", 3])
def test_non_object_is_refused(data):
    with pytest.raises(InvalidCase) as info:
        parse_case(data)
    assert info.value.fields == ["<root>"]


def test_answer_schema():
    good = {"decision": "DENY", "reasoning": "RET-9: final sale.", "customer_response": "Sorry.",
            "next_action": "Close.", "policy_refs": ["RET-9"]}
    assert parse_answer(good).decision == "DENY"
    for field, value in [("decision", "MAYBE"), ("reasoning", "x" * 401), ("customer_response", ""),
                         ("next_action", "x" * 161), ("policy_refs", ["RET-99"]), ("policy_refs", [])]:
        with pytest.raises(InvalidAnswer) as info:
            parse_answer({**good, field: value})
        assert any(f.startswith(field) for f in info.value.fields), (field, info.value.fields)
