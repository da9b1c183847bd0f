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


# --- issue 17: identifiers are printable tokens, the item one printable line, prose clean text ----
BAD_TEXT = [
    ("case_id with a space", _set("case_id", "C 1"), "case_id", "a space (U+0020) at position 1"),
    ("case_id with a newline", _set("case_id", "C-1\nC-2"), "case_id", "a line break (U+000A)"),
    ("case_id with a tab", _set("case_id", "C-1\t"), "case_id", "a tab (U+0009)"),
    ("case_id with a ZWSP", _set("case_id", "C\u200b-1"), "case_id", "zero-width character (U+200B)"),
    ("case_id with RLO", _set("case_id", "C-\u202e1"), "case_id", "bidi control character (U+202E)"),
    ("case_id starting with a dash", _set("case_id", "-C1"), "case_id", "starts with a letter or digit"),
    ("case_id of 65 chars", _set("case_id", "C" * 65), "case_id", "at most 64"),
    ("customer id with a newline", _set("customer.id", "U-1\n"), "customer.id", "a line break"),
    ("customer id with a BOM", _set("customer.id", "\ufeffU-1"), "customer.id", "character (U+FEFF)"),
    ("customer id non-ASCII", _set("customer.id", "Ü-1"), "customer.id", "(U+00DC) at position 0"),
    ("order id with a tab", _set("order.id", "O\t1"), "order.id", "a tab (U+0009)"),
    ("order id with LRI", _set("order.id", "O-\u20661"), "order.id", "bidi control character (U+2066)"),
    ("order id with a slash", _set("order.id", "O/1"), "order.id", "'/' (U+002F)"),
    ("empty order id", _set("order.id", ""), "order.id", "must not be empty"),
    ("item with a newline", _set("order.item", "Lamp\nshade"), "order.item", "a line break (U+000A)"),
    ("item with a tab", _set("order.item", "Lamp\tshade"), "order.item", "a tab (U+0009)"),
    ("item with a ZWJ", _set("order.item", "Lamp\u200d"), "order.item", "zero-width character (U+200D)"),
    ("item with RLO", _set("order.item", "\u202eLamp"), "order.item", "bidi control character (U+202E)"),
    ("item with a soft hyphen", _set("order.item", "Lamp\u00adshade"), "order.item", "format character"),
    ("item with ESC", _set("order.item", "Lamp\x1b[2J"), "order.item", "control character (U+001B)"),
    ("item of 121 chars", _set("order.item", "x" * 121), "order.item", "at most 120"),
    ("blank item", _set("order.item", "   "), "order.item", "must not be blank"),
    ("message with RLO", _set("message", "Hi \u202eevil"), "message", "(U+202E) at position 3"),
    ("message with ZWSP", _set("message", "Hi\u200b"), "message", "(U+200B) at position 2"),
    ("message with a CR", _set("message", "Hi\r\nthere"), "message", "carriage return (U+000D)"),
    ("message with a lone surrogate", _set("message", "Hi \udc80"), "message", "lone surrogate (U+DC80)"),
    ("message with a line separator", _set("message", "Hi\u2028there"), "message", "separator (U+2028)"),
]


@pytest.mark.parametrize(("mutate", "field", "found"), [(m, f, x) for _, m, f, x in BAD_TEXT],
                         ids=[name for name, *_ in BAD_TEXT])
def test_unclean_text_names_the_field_and_character(make_case_dict, mutate, field, found):
    data = copy.deepcopy(make_case_dict(days=12))
    mutate(data)
    with pytest.raises(InvalidCase) as info:
        parse_case(data)
    assert info.value.fields == [field]
    assert f"{field}: " in str(info.value) and found in str(info.value)


@pytest.mark.parametrize("item", ["Wireless headphones", "Lampe à poser – 40 cm, «Noir»", "東京タワー模型",
                                  "Kaffee & Tee (500 g) ™", "x" * 120])
def test_printable_items_in_any_script_are_accepted(make_case_dict, item):
    assert parse_case(make_case_dict(item=item)).order.item == item


def test_identifier_edges_are_accepted(make_case_dict):
    data = make_case_dict(case_id="C" * 64)
    data["customer"]["id"], data["order"]["id"] = "cust_9.a:b-c", "0"
    case = parse_case(data)
    assert (case.case_id, case.customer.id, case.order.id) == ("C" * 64, "cust_9.a:b-c", "0")
    parse_case(make_case_dict(message="Hello,\n\tthe lamp is broken.\n— Ana"))  # prose keeps \n and \t


@pytest.mark.parametrize("field", ["reasoning", "customer_response", "next_action"])
@pytest.mark.parametrize(("bad", "found"), [
    ("Close\x00", "control character (U+0000) at position 5"),
    ("Close\x1b[31m", "control character (U+001B) at position 5"),
    ("Close\x07", "control character (U+0007) at position 5"),
    ("Close \u202edesab", "bidi control character (U+202E) at position 6"),
    ("Close\u200b", "zero-width character (U+200B) at position 5"),
])
def test_answer_prose_refuses_unclean_text(field, bad, found):
    good = {"decision": "DENY", "reasoning": "RET-9: final sale.", "customer_response": "Sorry.",
            "next_action": "Close.", "policy_refs": ["RET-9"]}
    with pytest.raises(InvalidAnswer) as info:
        parse_answer({**good, field: bad})
    assert info.value.fields == [field] and str(info.value) == f"{field}: holds a {found}"
    assert parse_answer({**good, field: "Line one.\n\tLine two."})


def test_answer_json_schema_refuses_what_parse_answer_refuses():
    """The constrained-decoding grammar is compiled from this schema: a model cannot write a refused
    character; it writes each prose field on one line, as every training answer is written."""
    import re

    from policies import answer_json_schema
    from policies.text import LINE_PATTERN

    props = answer_json_schema()["properties"]
    assert props["reasoning"] == {"maxLength": 400, "minLength": 1, "pattern": LINE_PATTERN, "type": "string"}
    assert all(props[f]["pattern"] == LINE_PATTERN for f in ("customer_response", "next_action"))
    for ch in "\x00\x1b\x9b\u202e\u2066\u200b\ufeff\u2028\n\t":
        assert not re.search(LINE_PATTERN, f"Close{ch}.")
    assert re.search(LINE_PATTERN, 'Sorry, "RET-9" \\ applies — désolé 😀')
