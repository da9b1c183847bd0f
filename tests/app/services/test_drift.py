"""db.drift: distances, the plain-language note, override rates, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.services.drift import PSI_THRESHOLD, drift_report, override_rates, plot_drift, psi, tvd
from app.services.reviews import submit_review
from db.cases import add_case, save_run
from db.store import open_store
from engine.types import ModelAnswer
from policies import expected_decision, parse_case
from tests.app.services.loop_fixtures import rows_for, short_answer
from tests.conftest import tiny_cases, write_jsonl


def test_distances() -> None:
    assert tvd({"a": 1.0}, {"a": 1.0}) == 0.0
    assert tvd({"a": 1.0}, {"b": 1.0}) == 1.0
    assert abs(tvd({"UK": 0.2, "US": 0.8}, {"UK": 0.45, "US": 0.55}) - 0.25) < 1e-9
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert psi({"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.1}) > 0.2


def test_drift_report_names_what_moved(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows_for(("CAN-1", "FRD-1", "RET-3"), 30, 1, "C-TR"))
    store = open_store(tmp_path / "d.db")
    with store.session() as s:  # recent traffic: only fraud cases
        for row in rows_for(("FRD-1",), 30, 2, "C-RE"):
            add_case(s, parse_case(row["input"]), "try", "system")
    with store.session() as s:
        n, report = drift_report(s, train, last_n=50)
    assert n == 30
    by = {d.dimension: d for d in report}
    assert set(by) == {"region", "request_type", "expected_decision", "guard_flags"}
    assert by["request_type"].drifted and by["request_type"].tvd > 0.5
    assert "unauthorized_charge share rose from 33% to 100%" in by["request_type"].note
    assert plot_drift(report) is not None


def test_override_rates(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    from db.users import create_user

    with store.session() as s:
        create_user(s, "rita", "reviewer", "reviewer-password-1")
    for i, data in enumerate(tiny_cases()[:4]):
        case = parse_case(data)
        wrong = "DENY" if expected_decision(case).decision != "DENY" else "ESCALATE"
        answer = {**short_answer(case), "decision": wrong if i % 2 else expected_decision(case).decision}
        with store.session() as s:
            rec = add_case(s, case, "try", "rita")
            run = save_run(s, rec.id or 0, ModelAnswer(case_id=case.case_id, variant="finetuned",
                                                       model_version="ft-v1", status="ok",
                                                       raw_text=json.dumps(answer), answer=answer, error=None,
                                                       latency_s=0.1, input_tokens=1, output_tokens=1,
                                                       truncated=False), "rita")
            submit_review(s, rec.id or 0, "correct", "rita", runs={"finetuned": run},
                          answer=short_answer(case))
    with store.session() as s:
        frame = override_rates(s)
    assert frame["reviewed"].sum() == 4 and frame["overridden"].sum() == 2


def test_drift_needs_a_minimum_sample(tmp_path: Path) -> None:
    """Three recent cases of one kind: the shares moved, but nothing is called drifted on so few."""
    train = write_jsonl(tmp_path / "train.jsonl", rows_for(("CAN-1", "FRD-1", "RET-3"), 30, 1, "C-TR"))
    store = open_store(tmp_path / "few.db")
    with store.session() as s:
        for row in rows_for(("FRD-1",), 3, 2, "C-RE"):
            add_case(s, parse_case(row["input"]), "try", "system")
    with store.session() as s:
        n, report = drift_report(s, train, last_n=50)
    assert n == 3 and report and not any(d.drifted for d in report)
    assert all("too few recent cases" in d.note for d in report)
    assert max(d.psi for d in report) > PSI_THRESHOLD  # it would have been marked drifted


def test_confidence_tells_chance_from_a_move() -> None:
    """A sample drawn like the training data is within chance (large p, interval around its TVD);
    a sample of one kind only is far outside it (the smallest p the draws can give)."""
    from app.services.drift import DRAWS, tvd_confidence

    training = [("UK",)] * 50 + [("US",)] * 50
    same = tvd_confidence(training, [("UK",)] * 15 + [("US",)] * 15)
    assert same.p_value > 0.5 and 0 < same.chance_tvd < 0.3
    assert same.tvd_low <= 0.0 + 1e-9 <= same.tvd_high
    moved = tvd_confidence(training, [("UK",)] * 30)
    assert moved.p_value == round(1 / (DRAWS + 1), 4) and moved.tvd_low == moved.tvd_high == 0.5
    assert tvd_confidence(training, [("UK",)] * 30) == moved  # seeded: the same look twice agrees
    flags = tvd_confidence([("A", "B"), ("(no flag)",)] * 20, [("A", "B")] * 40)  # several values per case
    assert flags.p_value < 0.01
    with pytest.raises(ValueError, match="at least one case"):
        tvd_confidence(training, [])


def test_the_interval_holds_a_tvd_below_the_resampling_noise() -> None:
    """48 cases over five regions that match the training shares closely (observed TVD 0.033): the
    interval holds it and reaches as far as resampling moves such a sample. Percentiles of the resampled
    TVD would lie wholly above it (each resample adds ~0.1 of noise on top)."""
    from app.services.drift import shares, tvd, tvd_confidence

    regions = ["AU", "CA", "EU", "UK", "US"]
    training = [(r,) for r in regions] * 40
    recent = [(r,) for r in regions] * 8 + [(r,) for r in regions[:4]] * 2  # 10, 10, 10, 10, 8
    observed = tvd(shares(r for (r,) in training), shares(r for (r,) in recent))
    assert observed == pytest.approx(1 / 30, abs=1e-3)
    sure = tvd_confidence(training, recent)
    assert sure.tvd_low == 0.0 < observed < 0.1 < sure.tvd_high < 0.35
    assert sure.p_value > 0.9  # and chance says as much: nothing moved


def test_drift_table_shows_confidence(tmp_path: Path) -> None:
    from app.services.drift import drift_table

    train = write_jsonl(tmp_path / "train.jsonl", rows_for(("CAN-1", "FRD-1", "RET-3"), 30, 1, "C-TR"))
    store = open_store(tmp_path / "t.db")
    with store.session() as s:
        for row in rows_for(("FRD-1",), 30, 2, "C-RE"):
            add_case(s, parse_case(row["input"]), "try", "system")
    with store.session() as s:
        n, report = drift_report(s, train, last_n=50)
    frame = drift_table(n, report)
    columns = ["dimension", "TVD", "TVD 95% CI", "chance TVD", "p-value", "PSI", "drifted"]
    assert list(frame.columns) == columns
    row = frame.set_index("dimension").loc["request_type"]
    assert row["drifted"] == "yes" and row["p-value"] < 0.01 and row["chance TVD"] < row["TVD"]
    assert "p = 0.001" in next(d.note for d in report if d.dimension == "request_type")
    assert set(drift_table(3, report)["drifted"]) == {"too few cases"}
