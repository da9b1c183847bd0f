"""scripts/merge_adapter.py on the micro adapter: merged weights answer exactly as base+adapter."""

from __future__ import annotations

import json
from pathlib import Path

from scripts.merge_adapter import main
from tests.conftest import tiny_rows, write_jsonl


def test_merge_matches_base_plus_adapter(tiny_ft_dir: Path, tmp_path: Path) -> None:
    cases = write_jsonl(tmp_path / "cases.jsonl", tiny_rows())
    out = tmp_path / "merged"
    code = main(["--adapter", str(tiny_ft_dir), "--out", str(out), "--eval-set", str(cases),
                 "--check", "6", "--max-new-tokens", "64"])
    report = json.loads((out / "merge_check.json").read_text())
    assert code == 0, report
    assert report == {"cases": 6, "mismatches": 0, "decision_changes": 0, "details": []}
    assert (out / "model.safetensors").is_file() and (out / "prompt_format.json").is_file()
    assert not (out / "adapter_config.json").exists()  # a plain model, no PEFT needed to serve it


def test_merge_refuses_a_dir_without_adapter(tiny_base_dir: Path, tmp_path: Path) -> None:
    assert main(["--adapter", str(tiny_base_dir), "--out", str(tmp_path / "m"), "--check", "0"]) == 2
