"""The batch checker's contract (``python -m policies.check``), in process and as a subprocess."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from policies import DECISIONS, check, expected_decision, flags, parse_case
from policies.check import check_line, run
from policies.schema import CURRENCY_OF_REGION, REGIONS
from policies.synth import BOUNDARY_DAYS, TARGETS, sample_case

REPO = Path(__file__).resolve().parents[2]


def _cli(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policies.check", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO, timeout=120)


def test_good_lines_in_order(make_case_dict):
    lines = [
        json.dumps(make_case_dict(case_id="A", request_type="not_received", reason="not_received",
                                  price=600.0)),
        json.dumps({"case": make_case_dict(case_id="B", days=31, reason="changed_mind"),
                    "decision": "APPROVE_REFUND"}),
        json.dumps({"case": make_case_dict(case_id="C"), "decision": "APPROVE_REFUND"}),
    ]
    result = _cli("\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out == [
        {"case_id": "A", "expected_decision": "ESCALATE", "policy_refs": ["NRC-3", "LIM-1"],
         "violations": [], "flags": ["NEAR_LIMIT"]},
        {"case_id": "B", "expected_decision": "DENY", "policy_refs": ["RET-10"],
         "violations": ["OUTSIDE_WINDOW"], "flags": ["WINDOW_EDGE"]},
        {"case_id": "C", "expected_decision": "APPROVE_REFUND", "policy_refs": ["RET-3"], "violations": [],
         "flags": []},
    ]


def test_bad_lines_are_reported_and_processing_continues(make_case_dict):
    bad_region = make_case_dict(case_id="R")
    bad_region["region"] = "XX"
    lines = [
        json.dumps(make_case_dict(case_id="OK1")),
        "{not json",
        json.dumps(bad_region),
        json.dumps({"case": make_case_dict(case_id="D"), "decision": "REFUND_PLEASE"}),
        "",
        json.dumps({"case": make_case_dict(case_id="E"), "decision": "DENY", "note": "x"}),
        json.dumps([1, 2]),
        json.dumps({"case": {**make_case_dict(case_id="F"), "message": 5}}),
        json.dumps(make_case_dict(case_id="OK2")),
    ]
    result = _cli("\n".join(lines) + "\n")
    assert result.returncode == 1
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(out) == len(lines)
    assert out[0]["case_id"] == "OK1" and out[-1]["case_id"] == "OK2"
    errors = {o["line"]: o for o in out if "error" in o}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8]
    assert "invalid JSON" in errors[2]["error"] and "case_id" not in errors[2]
    assert errors[3]["case_id"] == "R" and "region" in errors[3]["error"]
    assert errors[4]["case_id"] == "D" and "decision" in errors[4]["error"]
    assert "blank" in errors[5]["error"]
    assert "note" in errors[6]["error"]
    assert "<root>" in errors[7]["error"]
    assert errors[8]["case_id"] == "F" and "case.message" in errors[8]["error"]


def test_importing_the_cli_keeps_policies_check_callable(make_case):
    import policies
    import policies.check  # noqa: F401  (rebinds the package attribute)

    assert policies.check(make_case(category="grocery", reason="changed_mind"), "APPROVE_REFUND") == [
        "NON_RETURNABLE_APPROVED"]


def test_empty_input_and_help():
    assert _cli("").returncode == 0
    helped = _cli("", "--help")
    assert helped.returncode == 0 and "usage" in helped.stdout and "policies.check" in helped.stdout


def test_run_in_process(make_case_dict):
    stdout = io.StringIO()
    code = run(io.StringIO(json.dumps(make_case_dict()) + "\n\n"), stdout)
    assert code == 1
    first, second = (json.loads(line) for line in stdout.getvalue().splitlines())
    assert first["policy_refs"] == ["RET-3"] and second == {"line": 2, "error": "<line>: blank line"}


@pytest.mark.parametrize(("decision", "violations"),
                         [(None, []), ("APPROVE_REFUND", ["NON_RETURNABLE_APPROVED"])])
def test_check_line_with_and_without_decision(make_case_dict, decision, violations):
    case = make_case_dict(category="grocery", reason="changed_mind")
    result, valid = check_line(json.dumps({"case": case, "decision": decision}), 1)
    assert valid and result["expected_decision"] == "DENY" and result["violations"] == violations


def _agreement_cases() -> list[dict]:
    rng = random.Random(7)
    cases = [sample_case(rng, TARGETS[i % len(TARGETS)], f"C-AG-{i}").to_json_dict() for i in range(1600)]
    for i, days in enumerate(BOUNDARY_DAYS * 40):
        data = sample_case(rng, rng.choice(("RET-3", "RET-10", "RET-12", "WAR-4", "RET-8")), f"C-BD-{i}")
        data = data.to_json_dict()
        data["order"]["days_since_delivery"] = days
        data["region"] = rng.choice(REGIONS)
        data["order"]["currency"] = CURRENCY_OF_REGION[data["region"]]
        cases.append(data)
    return cases


def test_cli_agrees_with_the_rule_engine():
    rng = random.Random(11)
    cases = _agreement_cases()
    proposals = [rng.choice((None, *DECISIONS)) for _ in cases]
    lines = [json.dumps(c if p is None else {"case": c, "decision": p})
             for c, p in zip(cases, proposals, strict=True)]
    result = _cli("\n".join(lines) + "\n")
    assert result.returncode == 0, result.stdout[-2000:]
    outputs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outputs) == len(cases) > 2000
    for data, proposed, out in zip(cases, proposals, outputs, strict=True):
        case = parse_case(data)
        expected = expected_decision(case)
        assert out == {
            "case_id": case.case_id, "expected_decision": expected.decision,
            "policy_refs": list(expected.policy_refs),
            "violations": [] if proposed is None else check(case, proposed), "flags": flags(case),
        }
