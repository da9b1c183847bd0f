"""app.services.metrics.model_metrics takes its figures from engine.metrics: the same answers give
the same decision accuracy, violation rate and JSON validity from the store as from scripts/evaluate.py."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from app.services.metrics import METRIC_NAMES, model_metrics
from db.cases import add_case, save_run
from engine.metrics import make_record, summarize_variant
from engine.types import ModelAnswer
from policies import Case, expected_decision, parse_case
from tests.conftest import make_answer, tiny_cases

# tiny_cases()[9]: a US defective return at 900.0 -> ESCALATE; APPROVE_REFUND breaks the auto limit.
VIOLATING = 9


def _answers(cases: list[Case]) -> dict[str, list[ModelAnswer]]:
    """Per variant, one answer per case: the fine-tuned one always right; the base one invalid on
    case 0, truncated on case 1, violating on case 9 and right elsewhere."""
    base = []
    for i, case in enumerate(cases):
        expected = expected_decision(case).decision
        if i == 0:
            answer = make_answer(case, "base", None)  # status invalid
        elif i == 1:
            answer = replace(make_answer(case, "base", None), status="truncated", truncated=True)
        elif i == VIOLATING:
            answer = make_answer(case, "base", "APPROVE_REFUND")
        else:
            answer = make_answer(case, "base", expected)
        base.append(answer)
    ft = [make_answer(case, "finetuned", expected_decision(case).decision) for case in cases]
    return {"base": base, "finetuned": ft}


def _stored_figures(store, answers: dict[str, list[ModelAnswer]], cases: list[Case]) -> dict[str, dict]:
    with store.session() as s:
        pks = [add_case(s, case, "try", "ann").id for case in cases]
        for per_case in answers.values():
            for pk, answer in zip(pks, per_case, strict=True):
                save_run(s, pk, answer, "ann")
        frame = model_metrics(s)
    assert list(frame.columns) == ["model_version", "variant", "metric", "value", "n"]
    out: dict[str, dict] = {}
    for row in frame.to_dict("records"):
        out.setdefault(row["variant"], {"n": row["n"], "model_version": row["model_version"]})
        out[row["variant"]][row["metric"]] = row["value"]
    return out


def test_model_metrics_match_engine_metrics(store) -> None:
    cases = [parse_case(c) for c in tiny_cases()]
    answers = _answers(cases)
    stored = _stored_figures(store, answers, cases)
    assert set(stored) == {"base", "finetuned"}
    keys = dict(zip(METRIC_NAMES, ("decision_accuracy", "violation_rate", "json_validity"), strict=True))
    for variant, per_case in answers.items():
        pairs = zip(cases, per_case, strict=True)
        records = [make_record(c, expected_decision(c).decision, a) for c, a in pairs]
        engine_summary = summarize_variant(records)
        assert stored[variant]["n"] == engine_summary["n"] == len(cases)
        assert stored[variant]["model_version"] == f"{variant}@v1"
        for metric, key in keys.items():
            assert stored[variant][metric] == pytest.approx(engine_summary[key]), (variant, metric)
    n = len(cases)
    base = stored["base"]  # invalid and truncated: wrong and not valid, never violating
    assert base["decision accuracy"] == pytest.approx((n - 3) / n)
    assert base["violation rate"] == pytest.approx(1 / n)
    assert base["JSON validity"] == pytest.approx((n - 2) / n)
    assert stored["finetuned"]["decision accuracy"] == 1.0 and stored["finetuned"]["violation rate"] == 0.0


def test_a_run_without_a_stored_verdict_is_judged_by_the_rule_engine(store) -> None:
    case = parse_case(tiny_cases()[VIOLATING])
    answers = {"base": [replace(make_answer(case, "base", "APPROVE_REFUND"), guard=None)],
               "finetuned": [replace(make_answer(case, "finetuned", "ESCALATE"), guard=None)]}
    stored = _stored_figures(store, answers, [case])
    assert stored["base"]["violation rate"] == 1.0 and stored["base"]["decision accuracy"] == 0.0
    assert stored["finetuned"]["decision accuracy"] == 1.0 and stored["finetuned"]["violation rate"] == 0.0


def _summary(dataset: str, figures: dict[str, float], **extra) -> dict:
    variant = {"n": 300, "decision_accuracy": figures["acc"], "violation_rate": figures["viol"],
               "json_validity": 1.0}
    variant.update({k: v for k, v in figures.items() if k not in ("acc", "viol")})  # whole-answer figures
    return {"dataset": dataset, "model": "default-ft", "model_versions": {"finetuned": "ft@2"},
            "variants": {"finetuned": variant}, **extra}


def test_evaluation_reports_put_stress_beside_eval(tmp_path) -> None:
    """Issue 15: the Metrics tab reports the stress set beside eval, from scripts/evaluate.py's
    summaries: each row names its set, model and report file; other summaries are left out."""
    import json
    import os

    from app.services.metrics import REPORT_COLUMNS, evaluation_reports

    def write(rel: str, data: object, mtime: float) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data) if not isinstance(data, str) else data)
        os.utime(path, (mtime, mtime))

    assert list(evaluation_reports(tmp_path).columns) == REPORT_COLUMNS  # none yet: headers, no rows
    targets = {"set": "stress", "finetuned": [{"figure": "decision_accuracy", "met": False},
                                              {"figure": "json_validity", "met": True}]}
    gen = "data/generated"
    write("runs/eval-stress/summary.json",
          _summary(f"{gen}/stress.jsonl", {"acc": 0.93, "viol": 0.027, "policy_refs_exact": 0.93,
                                             "text_check": 0.0, "facts_check": 0.55,
                                             "facts_misstated": {"claims": 11, "days": 115, "region": 21}},
                   targets=targets), 2_000)
    write("benchmarks/eval_summary.json", _summary(f"{gen}/eval.jsonl", {"acc": 0.957, "viol": 0.007}), 1_000)
    write("runs/eval-new/summary.json",
          _summary(f"{gen}/eval.jsonl", {"acc": 0.91, "viol": 0.047, "text_check": 0.0}), 3_000)
    write("runs/val/summary.json", _summary(f"{gen}/validation.jsonl", {"acc": 0.9, "viol": 0.0}), 4_000)
    write("runs/broken/summary.json", "{not json", 5_000)
    frame = evaluation_reports(tmp_path)
    assert list(frame["set"]) == ["eval", "eval", "stress"]  # eval first, the newest report first
    assert list(frame["report"]) == [str(tmp_path / p) for p in (
        "runs/eval-new/summary.json", "benchmarks/eval_summary.json", "runs/eval-stress/summary.json")]
    stress = frame.iloc[2]
    assert stress["decision accuracy"] == 0.93 and stress["violation rate"] == 0.027
    assert stress["model"] == "ft@2" and stress["n"] == 300 and stress["targets met"] == "1 of 2"
    assert frame.iloc[0]["targets met"] == ""  # no targets recorded
    # the whole answer beside the decisions; a report written before a figure existed leaves it empty
    assert stress["policy_refs exact"] == 0.93 and stress["facts check"] == 0.55
    assert pd.isna(frame.iloc[1]["text check"]) and frame.iloc[0]["text check"] == 0.0
    # what the facts check found, by kind, most first; nothing recorded: empty
    assert stress["facts misstated"] == "days 115 · region 21 · claims 11"
    assert frame.iloc[0]["facts misstated"] == ""


def test_the_renamed_and_titled_copies_are_reported_beside_their_set(tmp_path) -> None:
    """The copies of eval and stress with item names our catalogue does not have are reports too,
    each after its set; a renamed validation set (for choosing) and look-alike names are not."""
    import json

    from app.services.metrics import evaluation_reports
    from app.ui.metrics_tab import names_figure, sets_figure
    from engine.metrics import reported_set

    files = ("eval", "stress_titled", "eval_renamed", "validation_renamed", "stress_sorted", "evaluation",
             "titled")
    assert [reported_set(f"data/generated/{n}.jsonl") for n in files] == [
        "eval", "stress_titled", "eval_renamed", None, None, None, None]
    for name, acc in (("stress", 0.97), ("stress_titled", 0.66), ("eval_renamed", 0.95), ("eval", 0.94),
                      ("validation_titled", 0.9), ("stress_sorted", 0.5)):
        path = tmp_path / "runs" / name / "summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_summary(f"data/generated/{name}.jsonl", {"acc": acc, "viol": 0.01})))
    frame = evaluation_reports(tmp_path)
    assert list(frame["set"]) == ["eval", "eval_renamed", "stress", "stress_titled"]
    assert list(frame["decision accuracy"]) == [0.94, 0.95, 0.97, 0.66]
    # the eval/stress plot keeps to the two frozen sets; the names plot has one bar per set and copy
    assert len(sets_figure(frame).axes[0].patches) == 2 * len(METRIC_NAMES)
    names = names_figure(frame).axes[0]
    assert len(names.patches) == 4 * len(METRIC_NAMES)
    assert [t.get_text() for t in names.figure.legends[0].get_texts()] == [
        "eval · catalogue names (n=300)", "eval · renamed (n=300)", "stress · catalogue names (n=300)",
        "stress · titled (n=300)"]
    # no copy measured: the plot says so instead of repeating the frozen sets
    only_frozen = frame[frame["set"].isin(["eval", "stress"])]
    assert not names_figure(only_frozen).axes[0].patches
    # a copy is shown only for the model version of its set's newest report: never one model's eval
    # beside another's copy
    newer = frame.iloc[[0]].assign(model="ft@3", **{"decision accuracy": 0.99})
    names = names_figure(pd.concat([newer, frame], ignore_index=True)).axes[0]
    assert [t.get_text() for t in names.figure.legends[0].get_texts()] == [
        "eval · catalogue names (n=300)", "stress · catalogue names (n=300)", "stress · titled (n=300)"]
