"""scripts/evaluate.py on a few cases of the tiny model: every output file, every summary key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.evaluate import DatasetError, load_rows, main
from tests.conftest import tiny_rows, write_jsonl

SUMMARY_KEYS = {"n", "decision_accuracy", "violation_rate", "violations", "json_validity", "latency_p50_s",
                "latency_p95_s", "mean_output_tokens", "throughput_cases_per_s"}


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
    report = (out / "report.md").read_text()
    assert "| decision accuracy |" in report and "Confusion matrix: finetuned" in report
    assert "deciding rule" in report and "region" in report
    assert (out / "accuracy_per_rule.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_dataset_line_names_line_and_field(tmp_path: Path) -> None:
    rows = tiny_rows()[:2]
    rows[1]["input"]["region"] = "MARS"
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: input: region"):
        load_rows(data)
