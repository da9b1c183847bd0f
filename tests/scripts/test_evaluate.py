"""scripts/evaluate.py on a few cases of the tiny model: every output file, every summary key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.evaluate import DatasetError, load_rows, main
from tests.conftest import tiny_rows, write_jsonl

SUMMARY_KEYS = {"n", "decision_accuracy", "violation_rate", "violations", "json_validity", "latency_p50_s",
                "latency_p95_s", "mean_output_tokens", "throughput_cases_per_s", "by_chain"}


def test_evaluate_both_variants_constrained(tiny_ft_dir: Path, tmp_path: Path) -> None:
    # output may hold only the decision
    rows = [{**r, "output": {"decision": r["output"]["decision"]}} for r in tiny_rows()]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "out"
    # A budget of 160 tokens is far below the schema's longest answer: the decoder must close in time.
    rc = main(["--dataset", str(data), "--model", str(tiny_ft_dir), "--variant", "both",
               "--max-examples", "3", "--batch-size", "3", "--max-new-tokens", "160", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"base", "finetuned"}
    for figures in summary["variants"].values():
        assert SUMMARY_KEYS <= set(figures)
        assert figures["n"] == 3
        assert figures["json_validity"] == 1.0
    assert len(summary["dataset_sha256"]) == 64
    assert set(summary["model_versions"]) == {"base", "finetuned"}
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 6 and {p["status"] for p in preds} == {"ok"}
    chains = {p["chain"] for p in preds}
    assert chains == set(summary["variants"]["base"]["by_chain"])
    report = (out / "report.md").read_text()
    assert "| decision accuracy |" in report and "Confusion matrix: finetuned" in report
    assert "deciding rule" in report and "region" in report
    assert "Violations per deciding rule chain" in report and all(f"| {c} |" in report for c in chains)
    assert (out / "accuracy_per_rule.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_dataset_line_names_line_and_field(tmp_path: Path) -> None:
    rows = tiny_rows()[:2]
    rows[1]["input"]["region"] = "MARS"
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: input: region"):
        load_rows(data)


def test_metrics_count_invalid_as_wrong_never_as_violation() -> None:
    from engine.metrics import make_record, render_report, summarize
    from engine.types import ModelAnswer
    from policies import parse_case

    case = parse_case(tiny_rows()[9]["input"])  # US defective return at 900.0: ESCALATE via LIM-1

    def answer(variant: str, decision: str | None, latency: float) -> ModelAnswer:
        body = None if decision is None else {"decision": decision, "reasoning": "r",
                                              "customer_response": "c", "next_action": "n",
                                              "policy_refs": ["RET-3"]}
        return ModelAnswer(case_id=case.case_id, variant=variant, model_version="m",
                           status="ok" if body else "invalid", raw_text="", answer=body, error=None,
                           latency_s=latency, input_tokens=10, output_tokens=20, truncated=False)

    records = [make_record(case, "ESCALATE", answer("base", "APPROVE_REFUND", 1.0)),
               make_record(case, "ESCALATE", answer("base", None, 3.0)),
               make_record(case, "ESCALATE", answer("finetuned", "ESCALATE", 0.5))]
    summary = summarize(records, {"base": 4.0})
    base, ft = summary["base"], summary["finetuned"]
    assert base["n"] == 2 and base["decision_accuracy"] == 0.0 and base["json_validity"] == 0.5
    assert base["violation_rate"] == 0.5 and base["violations"]["OVER_AUTO_LIMIT"] == 1
    assert base["latency_p50_s"] == 2.0 and base["throughput_cases_per_s"] == 0.5
    assert base["confusion"] == {"ESCALATE": {"APPROVE_REFUND": 1, "<invalid>": 1}}
    assert base["by_rule"] == {"RET-3": {"n": 2, "accuracy": 0.0}}
    # violations per deciding rule chain (the rule engine's policy_refs): the invalid answer is not one
    assert base["by_chain"] == {"RET-3+LIM-1": {"n": 2, "accuracy": 0.0, "violating": 1}}
    assert ft["decision_accuracy"] == 1.0 and ft["violation_rate"] == 0.0
    assert ft["by_chain"] == {"RET-3+LIM-1": {"n": 1, "accuracy": 1.0, "violating": 0}}
    report = render_report(summary)
    assert "| decision accuracy | 0.0% | 100.0% |" in report
    assert "| RET-3+LIM-1 | 2 | 1 (0%) | 0 (100%) |" in report


def test_main_prints_the_violating_rule_chains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import scripts.evaluate as evaluate

    figures = {"decision_accuracy": 0.5, "violation_rate": 0.25, "json_validity": 1.0, "latency_p50_s": 0.1,
               "throughput_cases_per_s": 2.0,
               "by_chain": {"NRC-3": {"n": 2, "accuracy": 0.5, "violating": 1},
                            "NRC-3+LIM-1": {"n": 1, "accuracy": 0.0, "violating": 2},
                            "RET-4": {"n": 1, "accuracy": 1.0, "violating": 0}}}
    monkeypatch.setattr(evaluate, "run", lambda config: {"variants": {"finetuned": figures}})
    data = write_jsonl(tmp_path / "unused.jsonl", tiny_rows()[:1])
    assert main(["--dataset", str(data), "--out", str(tmp_path / "unused")]) == 0
    out = capsys.readouterr().out
    assert "finetuned: accuracy 50.0%, violations 25.0%" in out
    assert "violating cases per rule chain: NRC-3+LIM-1 2, NRC-3 1\n" in out


def test_evaluate_unconstrained_never_crashes_on_bad_output(tiny_ft_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "eval.jsonl", tiny_rows()[:2])
    out = tmp_path / "free"
    assert main(["--dataset", str(data), "--model", str(tiny_ft_dir), "--variant", "finetuned",
                 "--unconstrained", "--max-new-tokens", "24", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["variants"]) == ["finetuned"] and summary["decoding"] == "unconstrained"
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(p["status"] in ("ok", "invalid", "truncated") for p in preds)
    assert all(p["error"] for p in preds if p["status"] != "ok")
    assert summary["variants"]["finetuned"]["json_validity"] == sum(p["status"] == "ok" for p in preds) / 2


def test_dtype_reaches_the_engine_and_a_bad_one_is_refused(tiny_ft_dir: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """``--dtype`` sets the local model's weights (fp32 on a GPU evaluates as the CPU does)."""
    import torch

    from engine import Engine
    from scripts.evaluate import parse_args

    data = str(write_jsonl(tmp_path / "x.jsonl", tiny_rows()[:1]))
    assert parse_args(["--dataset", data, "--dtype", "fp32"]).dtype == "fp32"
    assert parse_args(["--dataset", data]).dtype == "auto"
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--dataset", data, "--dtype", "fp8"])
    assert exit_info.value.code == 2 and "--dtype: invalid choice: 'fp8'" in capsys.readouterr().err
    engine = Engine.load(str(tiny_ft_dir), device="cpu", dtype="bf16")
    assert next(engine.backend.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(("args", "said"), [
    (["--dataset", "{tmp}/none.jsonl"], "argument --dataset: no such file: {tmp}/none.jsonl"),
    (["--batch-size", "0"], "argument --batch-size: 0 is out of range: 1 to 1024"),
    (["--max-new-tokens", "-5"], "argument --max-new-tokens: -5 is out of range: 1 to 8192"),
    (["--max-examples", "many"], "argument --max-examples: 'many' is not a whole number"),
    (["--out", "/proc/no-such-place"], "--out: cannot write to /proc/no-such-place"),
    (["--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
    (["--model", "{ft}", "--variant", "nope"], "--variant: unknown variant 'nope' (loaded: base, finetuned)"),
    (["--dataset", "{tmp}/bad.jsonl"], "--dataset: {tmp}/bad.jsonl:2: not a row with input"),
])
def test_a_mistake_is_refused_in_one_line_naming_the_option(args: list[str], said: str, tmp_path: Path,
                                                            tiny_ft_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Bounds and files are checked before any work, a wrong model, variant or dataset line when it is
    met: exit status 2 and one line naming the option, never a traceback; nothing is written."""
    data = write_jsonl(tmp_path / "cases.jsonl", tiny_rows()[:1])
    (tmp_path / "bad.jsonl").write_text(data.read_text() + "not json\n")
    fill = {"tmp": str(tmp_path), "ft": str(tiny_ft_dir)}
    argv = ["--dataset", str(data), "--out", str(tmp_path / "out"), *[a.format(**fill) for a in args]]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f": error: {said.format(**fill)}" in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "summary.json").exists()
