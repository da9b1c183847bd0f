"""The scripts' shared command-line checks (engine/cli.py): bounds and files are checked before any
work, and a mistake ends the run with status 2 and one line naming the option, never a traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from engine.cli import bounded_int, existing_file, refusals, writable_dir
from tests.conftest import tiny_rows, write_jsonl


def test_bounded_int_and_existing_file(tmp_path: Path) -> None:
    parse = bounded_int(1, 10)
    assert parse("1") == 1 and parse("10") == 10
    for text, said in [("0", "0 is out of range: 1 to 10"), ("11", "11 is out of range: 1 to 10"),
                       ("1.5", "'1.5' is not a whole number"), ("", "'' is not a whole number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse(text)
    (tmp_path / "f").write_text("x")
    assert existing_file(str(tmp_path / "f")) == str(tmp_path / "f") and existing_file("-") == "-"
    for missing in (str(tmp_path / "none"), str(tmp_path)):  # a folder is not a file either
        with pytest.raises(argparse.ArgumentTypeError, match="no such file"):
            existing_file(missing)


def test_refusals_name_the_option_and_let_other_errors_through(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    with pytest.raises(SystemExit) as exit_info, refusals(parser, {KeyError: "--variant"}):
        raise KeyError("unknown variant 'x'")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith("tool: error: --variant: unknown variant 'x'\n")
    with pytest.raises(ZeroDivisionError), refusals(parser, {KeyError: "--variant"}):
        raise ZeroDivisionError  # not the user's to fix: a traceback, as any bug
    assert writable_dir(parser, "--out", tmp_path / "a" / "b").is_dir()
    with pytest.raises(SystemExit):
        writable_dir(parser, "--out", "/proc/no-such-place")
    assert "tool: error: --out: cannot write to /proc/no-such-place" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "said"), [
    (["--train", "-5"], "argument --train: -5 is out of range: 0 to 10000000"),
    (["--seed", "-1"], "argument --seed: -1 is out of range: 0 to 4294967295"),
    (["--train", "0", "--validation", "0", "--eval", "0"], "--train, --validation, --eval: all three are 0"),
    (["--pool-out", "p", "--quota", "0"], "argument --quota: 0 is out of range: 1 to 100000000"),
    (["--stress-out", "s.jsonl", "--stress-size", "0"], "argument --stress-size: 0 is out of range"),
    (["--against", "{tmp}/none.jsonl"], "argument --against: no such file: {tmp}/none.jsonl"),
])
def test_generate_sft_dataset_refuses_before_writing(args: list[str], said: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from scripts.generate_sft_dataset import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f": error: {said.format(tmp=tmp_path)}" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_merge_adapter_reads_its_check_cases_before_merging(tiny_ft_dir: Path, tmp_path: Path,
                                                            capsys) -> None:
    from scripts.merge_adapter import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    merge = ["--adapter", str(tiny_ft_dir), "--out", str(tmp_path / "merged")]
    assert main([*merge, "--eval-set", str(bad)]) == 2
    assert f"{bad}:1: not a row" in capsys.readouterr().err and not (tmp_path / "merged").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*merge, "--check", "-3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "argument --check: -3 is out of range: 0 to 10000" in err


@pytest.mark.parametrize(("args", "said"), [
    (["--eval-set", "{tmp}/none.jsonl"], "argument --eval-set: no such file: {tmp}/none.jsonl"),
    (["--eval-set", "{tmp}/bad.jsonl"], "--eval-set: line 1"),
    (["--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
    (["--db", "/proc/no-such-folder/x.db"], "--db: cannot open the store at sqlite:////proc/no-such-folder/x.db"),
])
def test_export_corrections_refuses_in_one_line(args: list[str], said: str, tmp_path: Path, capsys) -> None:
    """A mistyped eval set no longer turns its check off without a word ("none" does, on purpose)."""
    from scripts.export_corrections import main

    (tmp_path / "bad.jsonl").write_text('{"case_id": 1}\n')
    argv = ["--user", "otto", "--db", str(tmp_path / "store.db"), "--out", str(tmp_path / "out"),
            *[a.format(tmp=tmp_path) for a in args]]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f": error: {said.format(tmp=tmp_path)}" in err, err
    assert not (tmp_path / "out").exists()


def test_engine_serve_refuses_before_loading_a_model(tiny_ft_dir: Path, tmp_path: Path, capsys) -> None:
    from engine.serve import main

    for args, said in [
        (["--port", "0"], "argument --port: 0 is out of range: 1 to 65535"),
        (["--max-batch", "0"], "argument --max-batch: 0 is out of range: 1 to 1024"),
        (["--adapter", "ft-v2"], "argument --adapter: 'ft-v2': give NAME=DIR"),
        (["--adapter", f"ft-v2={tmp_path}"],
         f"argument --adapter: 'ft-v2={tmp_path}': {tmp_path} is not an adapter folder "
         "(no adapter_config.json)"),
        (["--model", "no-such-model"], "--model: unknown model 'no-such-model'"),
        (["--model", "served-ft"], "--model: served-ft is served by"),
        (["--model", str(tiny_ft_dir), "--adapter", f"base={tiny_ft_dir}"],
         "--adapter: names must differ and not be 'base'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"python -m engine.serve: error: {said}" in err, err


def test_benchmark_refuses_before_measuring(tmp_path: Path, capsys) -> None:
    from scripts.benchmark import main

    for args, said in [
        (["--batch-size", "0"], "argument --batch-size: 0 is out of range: 1 to 1024"),
        (["--dataset", str(tmp_path / "none.jsonl")],
         f"argument --dataset: no such file: {tmp_path}/none.jsonl"),
        (["--out", "/proc/no-such-place/r.json"], "--out: cannot write to /proc/no-such-place"),
        (["--model", "no-such-model", "--max-examples", "1"], "--model: unknown model 'no-such-model'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--out", str(tmp_path / "r.json"), *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f": error: {said}" in err, err
    assert not (tmp_path / "r.json").exists()


def test_benchmark_measures_every_ratio_on_a_tiny_model(tmp_path: Path, tiny_ft_dir: Path) -> None:
    # Behaviour, not timings: every ratio is measured and judged, and the prefix measurement reads
    # every timed row's system turn from the cache it warmed.
    from scripts.benchmark import TARGETS, main

    rows = write_jsonl(tmp_path / "cases.jsonl", tiny_rows()[:4])
    out = tmp_path / "r.json"
    assert main(["--model", str(tiny_ft_dir), "--dataset", str(rows), "--max-examples", "4",
                 "--batch-size", "2", "--max-new-tokens", "24", "--per-token-examples", "1",
                 "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results["meets_targets"]) == set(TARGETS) <= set(results["ratios"])
    prefix = results["throughput"]["prefix_reuse"]
    assert prefix["rows_from_cache"] == prefix["cases"] == 4 and prefix["turns_cached"] >= 1
    assert results["fast"]["prefix_cache"] is False and not results["prefix_cache_on"]  # titles format, CPU
    assert "off here unless asked" in out.with_suffix(".md").read_text()
    assert "system turns cached vs computed" in out.with_suffix(".md").read_text()


def test_benchmark_shape_builds_a_model_with_the_policy_in_prose(tmp_path: Path) -> None:
    import subprocess
    import sys

    from engine.registry import resolve_model

    done = subprocess.run([sys.executable, "scripts/benchmark.py", "shape", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and f"built {tmp_path}/adapter" in done.stdout
    assert resolve_model(str(tmp_path / "adapter")).prompt_format.policy == "full"


@pytest.mark.parametrize(("args", "said"), [
    (["--steps", "0"], "--steps: 0; must be from 1 to 10000000"),
    (["--num_heads", "5"], "--num_heads: 5; must be from 1 to 256 and divide hidden_size; --num_kv_heads: 2; "
                           "must be from 1 to num_heads and divide num_heads"),
    (["--vocab_size", "10", "--lr", "0"], "--vocab_size: 10; must be from 259 (the bytes and special tokens) "
                                          "to 262144; --lr: 0.0; must be > 0 and <= 1"),
    (["--max_minutes", "0"], "--max_minutes: 0.0; must be > 0 and <= 10080 (or unset)"),
    (["--precision", "fp8"], "--precision: 'fp8'; must be one of fp32, tf32, bf16"),
    (["--prompt_policy", "bogus"], "--prompt_policy: 'bogus'; must be full or titles"),
    (["--prompt_policy_facts", "true", "--prompt_case", "json"],
     "--prompt_policy_facts: True; must be false unless prompt_case is fields"),
    (["--message_after_prompt", "true"],
     "--message_after_prompt: True; must be false unless messages is true"),
    (["--exclude", "{tmp}/held-out.jsonl"], "--exclude: no such file: {tmp}/held-out.jsonl"),
    (["--device", "gpu"], "--device: 'gpu'; must be auto, cpu, cuda or cuda:N"),
    (["--seed", "-1"], "--seed: -1; must be from 0 to 4294967295"),
])
def test_build_base_model_refuses_before_any_work(args: list[str], said: str, tmp_path: Path, capsys) -> None:
    """Every mistake in one line naming the options, before the corpus or the tokenizer is made: a
    mistyped held-out file would otherwise let the base read those cases, a bad prompt option would
    be saved as the model's prompt format, a bad shape would fail after minutes."""
    from scripts.build_base_model import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "base"), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f": error: {said.format(tmp=tmp_path)}\n" in err, err
    assert "Traceback" not in err and not (tmp_path / "base").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_build_base_model_refuses_cuda_where_there_is_none(tmp_path: Path, capsys) -> None:
    from scripts.build_base_model import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "base"), "--device", "cuda:0"])
    assert ": error: --device: 'cuda:0'; no CUDA device is available here" in capsys.readouterr().err


def test_bounded_float() -> None:
    from engine.cli import bounded_float

    parse = bounded_float(0, 10)
    assert parse("0") == 0 and parse("2.5") == 2.5 and parse("10") == 10
    for text, said in [("-1", "-1 is out of range: 0 to 10"), ("nan", "nan is out of range"),
                       ("inf", "inf is out of range"), ("x", "'x' is not a number")]:
        with pytest.raises(argparse.ArgumentTypeError, match=said):
            parse(text)


@pytest.mark.parametrize(("script", "args", "said"), [
    ("rebalance_dataset", ["{tmp}/none.jsonl", "{tmp}/o.jsonl", "--weak", "GEN-1", "--rest", "1"],
     "argument src: no such file: {tmp}/none.jsonl"),
    ("rebalance_dataset", ["{rows}", "{tmp}/o.jsonl", "--weak", "GEN-1", "--rest", "-5"],
     "argument --rest: -5 is out of range: 0 to 10000000"),
    ("copy_probe", ["--max-examples", "0"], "argument --max-examples: 0 is out of range: 1 to 10000000"),
    ("copy_probe", ["--dataset", "{tmp}/none.jsonl"], "argument --dataset: no such file: {tmp}/none.jsonl"),
    ("correlation_report", ["--pool", "a={tmp}/none.jsonl"], "--pool: no such file: {tmp}/none.jsonl"),
    ("correlation_report", ["--pool", "a={bad}"], "--pool: {bad}:1: not a generator row with a case"),
    ("benchmark_review", ["--cases", "0"], "argument --cases: 0 is out of range: 1 to 1000"),
    ("benchmark_review", ["--read-s", "nan"], "argument --read-s: nan is out of range: 0 to 600"),
    ("loop_by_hand", ["--retrain-steps", "0"], "--retrain-steps: 0; must be -1 (the recipe's own length)"),
    ("loop_by_hand", ["--corrections-weight", "-1"], "argument --corrections-weight: -1 is out of range"),
    ("loop_by_hand", ["--train-data", "{tmp}/none.jsonl"], "--train-data: no such file: {tmp}/none.jsonl"),
])
def test_dev_tools_refuse_in_one_line(script: str, args: list[str], said: str, tmp_path: Path,
                                      capsys) -> None:
    """The dev tools check their numbers and files as the product's scripts do: a negative count was
    once read as "none" (rebalance) or "all but the last three" (copy_probe's slice), a bad row was a
    traceback."""
    import importlib

    rows = write_jsonl(tmp_path / "rows.jsonl", tiny_rows())
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    fill = {"tmp": tmp_path, "rows": rows, "bad": bad}
    main = importlib.import_module(f"scripts.{script}").main
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**fill) for a in args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and said.format(**fill) in err and "Traceback" not in err, err
