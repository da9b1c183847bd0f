"""Rebalancing a generator dataset toward weak rule chains (stage 3 of the default-ft recipe)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.sft_data import ConfigError, oversample_chains, rule_chain
from scripts.rebalance_dataset import main as rebalance_main

TRAIN = Path(__file__).resolve().parents[2] / "data/generated/train.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in TRAIN.open()]


def test_weak_chains_are_kept_whole_and_the_rest_sampled() -> None:
    rows = _rows()
    weak = {"NRC-3", "NRC-3+LIM-1"}
    out = oversample_chains(rows, weak, n_rest=200, seed=3)
    before, after = Counter(map(rule_chain, rows)), Counter(map(rule_chain, out))
    assert all(after[c] == before[c] for c in weak)
    assert sum(n for c, n in after.items() if c not in weak) == 200
    assert out == oversample_chains(rows, weak, n_rest=200, seed=3)  # seeded
    assert out != oversample_chains(rows, weak, n_rest=200, seed=4)


def test_unknown_chain_and_non_generator_row_are_named() -> None:
    with pytest.raises(ConfigError, match="NRC-9"):
        oversample_chains(_rows(), {"NRC-9"}, n_rest=1, seed=0)
    with pytest.raises(ConfigError, match="'x'.*policy_refs"):
        rule_chain({"id": "x", "messages": []})


def test_cli_writes_the_file_and_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "focus.jsonl"
    assert rebalance_main([str(TRAIN), str(out), "--weak", "RET-4", "--rest", "10", "--seed", "1"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 10 + sum(rule_chain(r) == "RET-4" for r in _rows())
    assert rebalance_main([str(TRAIN), str(tmp_path / "x.jsonl"), "--weak", "NOPE", "--rest", "1"]) == 2
    assert "NOPE" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()
