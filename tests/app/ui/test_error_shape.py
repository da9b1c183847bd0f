"""Issue 17, finding 8: one error shape. Every API parameter fuzzed (wrong types, missing values, huge
numbers, deep nesting, huge strings) is refused with a message naming a field; nothing crashes, and
the log holds no traceback (one line with a request id per refusal instead)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from scripts.fuzz_api import endpoints, fuzz
from tests.conftest import tiny_cases


def test_every_parameter_fuzzed_is_refused_naming_a_field(served, capfd, caplog):
    client = Client(served.url, auth=served.auth("otto"), verbose=False)
    case_id = served.batch_case_ids[0]
    valid = {
        "/compare": [json.dumps(tiny_cases()[6])],
        "/submit_review": [case_id, "flag", "", "fuzzing", "", False],
        "/reviews": [case_id],
    }
    with caplog.at_level(logging.INFO, logger="policyops.requests"):
        report = fuzz(client, valid=valid)
    out, err = capfd.readouterr()
    print({k: report[k] for k in ("tried", "refused_named", "accepted", "crashed")})  # the README's figures
    assert set(report["endpoints"]) == {"/compare", "/submit_review", "/reviews", "/export"}
    assert report["crashed"] == 0, report["crashes"]
    assert report["tried"] >= 140 and report["refused_named"] >= 130, report
    assert "Traceback" not in out + err
    lines = [r.getMessage() for r in caplog.records if r.name == "policyops.requests"]
    assert lines and all(line.startswith("request ") for line in lines)
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.INFO)


def test_the_findings_inputs_name_their_field(served, capfd):
    """The inputs issue 17 listed as ending in a bare "Error" with a traceback."""
    reviewer = Client(served.url, auth=served.auth("rita"), verbose=False)
    case = tiny_cases()[7]
    case["order"]["price"] = 10**400
    with pytest.raises(AppError, match="order.price"):
        reviewer.predict(json.dumps(case), api_name="/compare")
    with pytest.raises(AppError, match="case_id: no case"):
        reviewer.predict("#9999999999999999999", "flag", "", "x", api_name="/submit_review")
    with pytest.raises(AppError, match="answer_json: at most 20000 characters"):
        reviewer.predict(served.batch_case_ids[0], "correct", "[" * 100_000, "", api_name="/submit_review")
    with pytest.raises(AppError, match="answer: not valid JSON .nested too deeply"):
        reviewer.predict(served.batch_case_ids[0], "correct", "[" * 10_000, "", api_name="/submit_review")
    http = httpx.Client(base_url=served.url, cookies=reviewer.cookies, timeout=30)
    r = http.post("/gradio_api/call/compare", json={"data": [5]})
    stream = http.get(f"/gradio_api/call/compare/{r.json()['event_id']}").text
    assert "case_json: must be text (got int)" in stream
    r = http.post("/gradio_api/call/submit_review", json={"data": ["C-000004"]})
    stream = http.get(f"/gradio_api/call/submit_review/{r.json()['event_id']}").text
    assert "action: missing" in stream
    assert "Traceback" not in "".join(capfd.readouterr())


def test_fuzzer_sees_every_named_endpoint(served):
    found = endpoints(Client(served.url, auth=served.auth("ann"), verbose=False))
    assert [p["name"] for p in found["/submit_review"]] == [
        "case_id", "action", "answer_json", "note", "idempotency_key", "revision"
    ]
