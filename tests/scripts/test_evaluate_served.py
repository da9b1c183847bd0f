"""scripts/evaluate.py on a served model (backend "openai" against a real engine.serve subprocess) gives
the figures the local engine gives on the same cases."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.evaluate import main
from tests.conftest import tiny_rows, write_jsonl
from tests.engine.serving import engine_server

FIGURES = ("decision_accuracy", "violation_rate", "json_validity", "mean_output_tokens")


def served_registry(path: Path, url: str, tiny_ft_dir: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Versions named as the local engine of the adapter dir names them (base "base", adapter "ft").
    path.write_text(f"""
[models.served-tiny]
backend = "openai"
base_url = "{url}"
served_models = {{ base = "tiny-base", finetuned = "finetuned" }}
base = "base"
adapters = {{ finetuned = "{tiny_ft_dir}" }}
version = "{tiny_ft_dir.name}"
max_concurrency = 4
""", encoding="utf-8")
    return path


def test_served_figures_equal_local_ones(tiny_ft_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "eval.jsonl", tiny_rows())
    common = ["--dataset", str(data), "--variant", "both", "--max-examples", "6", "--batch-size", "4",
              "--max-new-tokens", "128"]
    assert main([*common, "--model", str(tiny_ft_dir), "--out", str(tmp_path / "local")]) == 0
    with engine_server(str(tiny_ft_dir), "--served-model-name", "tiny-base") as url:
        registry = served_registry(tmp_path / "data" / "models.toml", url, tiny_ft_dir)
        assert main([*common, "--model", "served-tiny", "--registry", str(registry),
                     "--out", str(tmp_path / "served")]) == 0
    local, served = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "served"))
    assert served["backend"] == "openai" and local["backend"] == "local"
    assert served["model_versions"] == local["model_versions"]
    for variant in ("base", "finetuned"):
        for figure in FIGURES:
            figures = served["variants"][variant][figure], local["variants"][variant][figure]
            assert figures[0] == figures[1], (variant, figure)
    texts = [[json.loads(line)["raw_text"] for line in (tmp_path / d / "predictions.jsonl").open()]
             for d in ("local", "served")]
    assert texts[0] == texts[1]
