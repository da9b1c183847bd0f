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

from app.services.http_limits import MAX_BODY_BYTES
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


def _request_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "policyops.requests"]


def test_one_log_line_per_refused_request(served, capfd, caplog):
    """Issue 18: each refusal (a role refusal, a bad field, a wrong password, a body over the limit,
    an upload) leaves exactly one line in the log, naming the refusal, and no traceback anywhere."""
    agent = Client(served.url, auth=served.auth("ann"), verbose=False)
    reviewer = Client(served.url, auth=served.auth("rita"), verbose=False)
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        caplog.clear()
        with pytest.raises(AppError, match="export"):
            agent.predict(api_name="/export")
        role = _request_lines(caplog)
        caplog.clear()
        case = tiny_cases()[7]
        case["order"]["price"] = 10**400
        with pytest.raises(AppError, match="order.price"):
            reviewer.predict(json.dumps(case), api_name="/compare")
        field = _request_lines(caplog)
        caplog.clear()
        assert httpx.post(served.url + "login", data={"username": "rita", "password": "wrong-guess-1"}
                          ).status_code == 400
        wrong_login = _request_lines(caplog)
        caplog.clear()
        big = httpx.post(served.url + "gradio_api/call/compare", content=b"x" * (MAX_BODY_BYTES + 1),
                         cookies=reviewer.cookies)
        assert big.status_code == 413 and big.json() == {"error": f"body: at most {MAX_BODY_BYTES} bytes"}
        too_big = _request_lines(caplog)
        caplog.clear()
        upload = httpx.post(served.url + "gradio_api/upload", files={"files": ("a.txt", b"hi")},
                            cookies=reviewer.cookies)
        assert upload.status_code == 403
        uploads = _request_lines(caplog)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert len(role) == 1 and "refused" in role[0] and "export" in role[0], role
    assert len(field) == 1 and "order.price" in field[0], field
    assert len(wrong_login) == 1 and "login" in wrong_login[0] and "rita" in wrong_login[0], wrong_login
    assert "wrong-guess-1" not in wrong_login[0]  # never the password
    assert len(too_big) == 1 and "body: at most" in too_big[0], too_big
    assert len(uploads) == 1 and "uploads are off" in uploads[0], uploads
    assert not any(r.exc_info for r in caplog.records)
