"""engine.champion's gate, without a model: per-dataset verdicts from compare_records' figures."""

from __future__ import annotations

import pytest

from engine.champion import (
    ACCURACY_MARGIN,
    compare_records,
    comparison_markdown,
    gate_refusal,
    gate_verdicts,
)
from engine.metrics import EvalRecord


def _records(variant: str, correct: list[bool], violating: list[bool]) -> list[EvalRecord]:
    return [EvalRecord(case_id=f"C-{i}", variant=variant, label="APPROVE", rule="RET-1", chain="RET-1",
                       request_type="return", region="EU", predicted="APPROVE" if ok else "DENY",
                       status="ok", violations=("V-1",) if bad else (), latency_s=0.01,
                       input_tokens=10, output_tokens=5)
            for i, (ok, bad) in enumerate(zip(correct, violating, strict=True))]


def _comparison(champion: tuple[int, int], challenger: tuple[int, int], n: int = 100) -> dict:
    """compare_records of two runs over n cases: (wrong, violating) cases per side."""
    def run(variant: str, wrong: int, violating: int) -> list[EvalRecord]:
        return _records(variant, [i >= wrong for i in range(n)], [i < violating for i in range(n)])
    return compare_records(run("champion", *champion), run("finetuned", *challenger))


def test_compare_records_keeps_the_gates_figures_per_dataset() -> None:
    d = _comparison((5, 2), (4, 3))
    assert d["hard_violations"] == {"champion": 2, "challenger": 3}
    assert d["summary"]["challenger"]["decision_accuracy"] == pytest.approx(0.96)
    [v] = gate_verdicts({"datasets": {"eval": d}})
    assert (v.dataset, v.gating, v.passed, v.blocks) == ("eval", True, False, True)
    assert (v.champion_violations, v.challenger_violations) == (2, 3)
    assert v.reason == "on eval, 3 cases with hard violations against the champion's 2"


def test_holdout_is_reported_never_added_and_never_gating() -> None:
    comparison = {"datasets": {"holdout": _comparison((40, 30), (0, 0)), "eval": _comparison((5, 2), (5, 3))}}
    verdicts = gate_verdicts(comparison)
    assert [(v.dataset, v.gating, v.passed) for v in verdicts] == [("eval", True, False),
                                                                   ("holdout", False, True)]
    assert gate_refusal(verdicts) == "on eval, 3 cases with hard violations against the champion's 2"
    # worse on holdout, equal on eval: promoted
    comparison = {"datasets": {"eval": _comparison((5, 2), (5, 2)), "holdout": _comparison((0, 0), (40, 30))}}
    verdicts = gate_verdicts(comparison)
    assert gate_refusal(verdicts) is None and not verdicts[1].passed and not verdicts[1].blocks


def test_accuracy_margin_and_stress() -> None:
    assert ACCURACY_MARGIN == 0.01
    exactly = {"datasets": {"eval": _comparison((5, 0), (6, 0))}}  # one point lower: within the margin
    assert gate_refusal(gate_verdicts(exactly)) is None
    beyond = {"datasets": {"eval": _comparison((5, 0), (7, 0))}}
    assert gate_refusal(gate_verdicts(beyond)) == (
        "on eval, decision accuracy 93.0% vs the champion's 95.0% (more than 1.0 point lower)")
    assert gate_refusal(gate_verdicts(beyond, margin=0.02)) is None
    with pytest.raises(ValueError, match="negative"):
        gate_verdicts(beyond, margin=-0.01)
    stress = {"datasets": {"eval": _comparison((5, 0), (5, 0)), "stress": _comparison((10, 1), (20, 4))}}
    assert gate_refusal(gate_verdicts(stress)) == (
        "on stress, 4 cases with hard violations against the champion's 1 and decision accuracy "
        "80.0% vs the champion's 90.0% (more than 1.0 point lower)")


def test_old_or_missing_figures_ask_for_a_re_evaluation() -> None:
    for old in ({"hard_violations": {"champion": 3, "challenger": 1}, "datasets": {}}, None, {},
                {"datasets": {"holdout": _comparison((0, 0), (0, 0))}}):
        verdicts = gate_verdicts(old)
        assert verdicts[0].dataset == "eval" and verdicts[0].blocks and not verdicts[0].has_figures
        assert "re-evaluate" in (gate_refusal(verdicts) or "")
    broken_stress = {"datasets": {"eval": _comparison((5, 0), (5, 0)), "stress": {"summary": {}}}}
    assert gate_refusal(gate_verdicts(broken_stress)) == (
        "not evaluated per dataset (no figures for stress); re-evaluate it against the champion")


def test_markdown_shows_the_gates_verdicts() -> None:
    evaluation = {"champion_version": "ft-v1", "hard_violations": {"champion": 32, "challenger": 3},
                  "datasets": {"eval": _comparison((5, 2), (5, 3)), "holdout": _comparison((40, 30), (0, 0))}}
    md = comparison_markdown(evaluation, "ft-v2")
    assert md.startswith("**ft-v2** vs champion **ft-v1**: the gate refuses (on eval, 3 cases with hard "
                         "violations against the champion's 2).")
    assert "- eval (gating): REFUSES: on eval, 3 cases" in md
    assert "- holdout (reported, not gating): within the rules: on holdout, 0 cases" in md
    assert "32" not in md.split("####")[0]  # the old total is not shown
    evaluation["datasets"]["eval"] = _comparison((5, 2), (4, 2))
    assert "the gate passes" in comparison_markdown(evaluation, "ft-v2")
