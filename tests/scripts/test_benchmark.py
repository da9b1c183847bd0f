"""scripts/benchmark.py on a tiny model: every measurement present, its table printed, one run."""

from __future__ import annotations

from pathlib import Path

from scripts.benchmark import TARGETS, markdown, run


def test_one_run_gives_every_ratio_and_its_table(tiny_ft_dir: Path) -> None:
    results = run(str(tiny_ft_dir), "data/generated/validation.jsonl", max_examples=6, batch_size=3,
                  max_new_tokens=12, per_token_examples=1)
    ratios, grouping = results["ratios"], results["throughput"]["length_grouping"]
    assert set(TARGETS) < set(ratios) and "length_grouping_speedup" not in TARGETS
    assert all(r > 0 for r in ratios.values())
    assert set(results["meets_targets"]) == set(TARGETS)
    # grouping by prompt length never pads more than input order does
    assert 0 <= grouping["padding_grouped"] <= grouping["padding_input_order"] < 1
    assert grouping["cases"] == 6 and grouping["grouped_s"] > 0 and grouping["input_order_s"] > 0
    table = markdown(results)
    assert "| batched, grouped by prompt length vs input order, s |" in table
    assert table.count("\n| ") == 1 + len(TARGETS) + 1 + 1  # header, targets, grouping, reference shape
