"""scripts/device_check.py: its summary holds issue 21's keys; a CPU run never overwrites the GPU figures."""

from __future__ import annotations

from pathlib import Path

from scripts.device_check import TARGETS, parse_args, summary

ISSUE_KEYS = ["ft_constrained_s_per_answer_p50", "ft_vs_base_per_token", "constrained_vs_free_per_token",
              "batch64_answers_per_s"]


def test_summary_has_the_issue_keys_for_bf16_and_nf4_eager_and_compiled() -> None:
    targets = {"ft_constrained_s_per_answer_p50": 0.4, "ft_vs_base_per_token": 1.1,
               "constrained_vs_free_per_token": 1.3, "batch64_answers_per_s": 41.0}
    report = {"engine_none": {"targets": targets, "match": {"same_answers": 31, "cases": 32}},
              "engine_nf4": {"targets": targets}, "baseline": {"s_per_answer_p50": 1.4},
              "engine_none_compiled": {"targets": targets},
              "engine_nf4_compiled": {"targets": dict(targets, batch64_answers_per_s=6.0)}}
    out = summary(report)
    assert list(TARGETS) == ISSUE_KEYS
    suffixes = ("", "_nf4", "_compiled", "_nf4_compiled")
    assert all(key + suffix in out for key in ISSUE_KEYS for suffix in suffixes)
    assert out["meets_targets"]["batch64_answers_per_s_nf4_compiled"] is False
    assert out["plain_generate_merged_eager"] == {"s_per_answer_p50": 1.4}
    assert out["fast_vs_plain_same_answers"] == "31/32"
    assert out["meets_targets"]["batch64_answers_per_s_nf4"] is True
    assert out["meets_targets"]["constrained_vs_free_per_token"] is False


def test_cpu_run_writes_elsewhere() -> None:
    args = parse_args(["--tiny"])
    assert args.out != Path("benchmarks/gpu_check.json") and "tiny" in str(args.work)


def test_profile_part_splits_a_batch_into_prefill_and_steps_on_the_cpu(tmp_path: Path) -> None:
    # The GPU part that answers "where do a batch's steps go", run on the tiny shape: every figure
    # present, the steps counted, and the profiler's table by host time (no device here).
    from engine.metrics import load_rows
    from scripts.device_check import REPO, TINY, build_shape, profile_batch64

    _, adapter = build_shape(tmp_path, TINY)
    cases = [case for case, _ in load_rows(REPO / "data" / "generated" / "validation.jsonl", 8)]
    args = parse_args(["--tiny", "--max-new-tokens", "12", "--static-prefix"])
    out = profile_batch64(adapter, cases, args)
    assert out["cases"] == 8 and out["fast"]["static_cache"] is True and out["fast"]["static_prefix"] is True
    assert out["free_steps"] == 12 and out["constrained_steps"] > 1
    # per step = (run - prefill) / steps: two timings, so on a shared CPU only its presence is certain
    assert all(isinstance(out[k], float) for k in ("free_ms_per_step", "constrained_ms_per_step"))
    assert out["prefill_s"] > 0 and out["grammar_held_ms_per_step"] >= 0
    assert out["profiled"]["by_host_time"] and out["profiled"]["by_device_time"] == []
