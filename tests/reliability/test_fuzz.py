"""Hostile and broken input (hypothesis): every bad case gets an error naming the field, directly
and through /compare, and the console stays up; broken model output is invalid, never auto-sent."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ui.actions import parse_case_text
from engine.extract import extract_answer
from engine.guard import guard
from engine.types import ModelAnswer
from policies import DECISIONS, InvalidCase, parse_case
from tests.conftest import tiny_cases

MB = 2**20
HUGE = [10**30, -(10**30), 1e308, float("nan"), float("inf"), -1]
TEXT_BAD = [None, 5, 1.5, True, [], {}, "x" * MB, "bell\x07", "nul\x00", "esc\x1b[31m", "bad \udc80 utf-8"]
BOOL_BAD = [None, "true", 1, 0, [], "yes"]
ENUM_BAD = [None, 7, "", "XX", "delivered ", ["US"], "x" * MB]
INT_BAD = ["5", 1.5, True, [], *HUGE]
PRICE_BAD = [None, "9.99", True, [], 0, *HUGE]
# Each field of a case and values that can never be valid there.
FIELDS: dict[str, list[Any]] = {
    "case_id": TEXT_BAD + [""],
    "region": ENUM_BAD,
    "request_type": ENUM_BAD,
    "reason": ENUM_BAD,
    "message": TEXT_BAD,
    "customer.id": TEXT_BAD + [""],
    "customer.tier": ENUM_BAD,
    "customer.claims_last_12m": INT_BAD + [None],
    "order.id": TEXT_BAD,
    "order.category": ENUM_BAD,
    "order.item": TEXT_BAD + [""],
    "order.price": PRICE_BAD,
    "order.currency": ENUM_BAD,
    "order.final_sale": BOOL_BAD,
    "order.status": ENUM_BAD,
    "order.days_since_delivery": INT_BAD,
    "order.opened": BOOL_BAD,
    "order.signature_confirmed": BOOL_BAD,
}


@st.composite
def broken_cases(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """(a case with one field broken, missing or one unknown field added, the field at fault)."""
    data = copy.deepcopy(draw(st.sampled_from(tiny_cases())))
    path = draw(st.sampled_from(sorted(FIELDS)))
    *parents, leaf = path.split(".")
    holder = data
    for p in parents:
        holder = holder[p]
    how = draw(st.sampled_from(("bad_value", "missing", "extra")))
    if how == "bad_value":
        holder[leaf] = draw(st.sampled_from(FIELDS[path]))
    elif how == "missing":
        del holder[leaf]
    else:
        leaf = draw(st.sampled_from(("admin", "auto_send", "decision", "__proto__", "x" * 300)))
        holder[leaf] = draw(st.sampled_from([True, "APPROVE_REFUND", {"a": 1}]))
        path = ".".join([*parents, leaf])
    return data, path


def _assert_names(exc: InvalidCase, path: str) -> None:
    assert exc.errors, "an error without a field"
    assert any(f == path or f.startswith(path + ".") for f in exc.fields), (path, exc.fields)


@settings(max_examples=400, deadline=None)
@given(broken_cases())
def test_parse_case_names_the_broken_field(broken):
    data, path = broken
    with pytest.raises(InvalidCase) as err:
        parse_case(data)
    _assert_names(err.value, path)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.floats(), st.text(), st.lists(st.integers()), st.binary()))
def test_parse_case_refuses_non_objects(value):
    with pytest.raises(InvalidCase) as err:
        parse_case(value)
    assert err.value.fields == ["<root>"]


@pytest.mark.parametrize(
    "text",
    [
        "", "null", "[]", "{", '{"case_id": }', "[" * 100_000, "{" * 100_000, "NaN",
        b"\xff\xfe{\x80}".decode("utf-8", "surrogateescape"), "\x00" * 10,
    ],
)
def test_parse_case_text_never_crashes(text):
    with pytest.raises(InvalidCase) as err:
        parse_case_text(text)
    assert err.value.fields


def test_invalid_utf8_in_message_is_named():
    raw = json.dumps({**tiny_cases()[0], "message": "PLACEHOLDER"}).encode()
    raw = raw.replace(b"PLACEHOLDER", b"caf\xc3 \xff\xfe")
    with pytest.raises(InvalidCase) as err:
        parse_case_text(raw.decode("utf-8", "surrogateescape"))
    _assert_names(err.value, "message")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(broken=broken_cases())
def test_compare_names_the_broken_field_and_stays_up(served, broken):
    data, path = broken
    client = _clients(served)
    payload = json.dumps(data, allow_nan=True)
    with pytest.raises(AppError) as err:
        client.predict(payload, api_name="/compare")
    assert path in str(err.value) or path.split(".")[-1] in str(err.value)


def test_console_stays_up_after_hostile_input(served):
    client = _clients(served)
    big = json.dumps({**tiny_cases()[0], "message": "A" * MB})
    lone_surrogate = json.dumps({**tiny_cases()[0], "message": "bad \udc80 utf-8"})  # JSON escape
    for payload in (big, "[" * 100_000, lone_surrogate, '{"case_id": NaN}'):
        with pytest.raises(AppError, match="message|<root>|case_id"):
            client.predict(payload, api_name="/compare")
    out = client.predict(json.dumps(tiny_cases()[0]), api_name="/compare")
    assert set(out["answers"]) == {"base", "finetuned"}


_CLIENT: dict[str, Client] = {}


def _clients(served) -> Client:
    """One logged-in client per served app (hypothesis reruns the body; logins cost ~50 ms each)."""
    if served.url not in _CLIENT:
        _CLIENT[served.url] = Client(served.url, auth=served.auth("ann"), verbose=False)
    return _CLIENT[served.url]


# --- model output ---------------------------------------------------------------------------------
GOOD = {
    "decision": "DENY",
    "reasoning": "RET-10 applies.",
    "customer_response": "Sorry, this is outside the window.",
    "next_action": "Close the case.",
    "policy_refs": ["RET-10"],
}
GOOD_TEXT = json.dumps(GOOD)
CASE = parse_case(tiny_cases()[2])  # RET-10: DENY


def _model_answer(text: str, hit_limit: bool = False) -> ModelAnswer:
    found = extract_answer(text, hit_token_limit=hit_limit)
    return ModelAnswer(
        "C-000003", "finetuned", "tiny", found.status, text, found.answer, found.error, 0.0, 1, 1, hit_limit
    )


@pytest.mark.parametrize(
    "text, status",
    [
        ("", "invalid"),
        ("   \n", "invalid"),
        ("I think we should refund.", "invalid"),
        (GOOD_TEXT[:-1], "invalid"),
        (GOOD_TEXT[: len(GOOD_TEXT) // 2], "invalid"),
        (json.dumps({**GOOD, "decision": "REFUND_EVERYTHING"}), "invalid"),
        (json.dumps({**GOOD, "decision": None}), "invalid"),
        (json.dumps({**GOOD, "policy_refs": ["XYZ-1"]}), "invalid"),
        (json.dumps({**GOOD, "admin": True}), "invalid"),
        ("[" + GOOD_TEXT + "]", "ok"),  # the object inside is found
        ('{"decision": "DENY", "reasoning": "' + "a" * 10_000, "invalid"),
    ],
)
def test_broken_model_output_is_invalid_never_auto_sent(text, status):
    answer = _model_answer(text)
    assert answer.status == status
    verdict = guard(CASE, answer)
    if status != "ok":
        assert answer.answer is None and answer.error and not verdict.auto_send


def test_truncated_output_is_truncated():
    answer = _model_answer(GOOD_TEXT[:40], hit_limit=True)
    assert answer.status == "truncated" and not guard(CASE, answer).auto_send


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.text(max_size=400),
    st.builds(lambda n: GOOD_TEXT[:n], st.integers(0, len(GOOD_TEXT))),
    st.builds(lambda d: json.dumps({**GOOD, "decision": d}), st.text(max_size=30)),
    st.builds(json.dumps, st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20),
                                       lambda c: st.lists(c) | st.dictionaries(st.text(max_size=10), c),
                                       max_leaves=20)),
), st.booleans())
def test_any_model_output_never_crashes(text, hit_limit):
    answer = _model_answer(text, hit_limit)
    assert answer.status in ("ok", "invalid", "truncated")
    verdict = guard(CASE, answer)
    if answer.status != "ok":
        assert not verdict.auto_send and verdict.violations == ()
    else:
        assert answer.answer is not None and answer.answer["decision"] in DECISIONS
