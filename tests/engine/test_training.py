"""engine.training.train: callbacks go to the trainer; engine.train_job passes its progress callback
that way, leaving transformers' DEFAULT_CALLBACKS alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import transformers.trainer as hf_trainer
from transformers import TrainerCallback

from engine.sft_data import ConfigError, RunConfig, TrainingPoolLeak
from engine.training import merge_repeated_flags, parse_run_config, train
from tests.conftest import tiny_rows, write_jsonl


class Recorder(TrainerCallback):
    """Notes which trainer events it saw, and the steps it saw them at."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("train_begin", state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("step_end", state.global_step))

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.events.append(("log", state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("train_end", state.global_step))


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restore the root logger after a command-line entry point configured it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def _tiny_flags(base: Path, data: Path, out: Path, steps: int = 2) -> list[str]:
    train_file = write_jsonl(data / "train.jsonl", tiny_rows())
    val_file = write_jsonl(data / "validation.jsonl", tiny_rows()[:4])
    return ["--model", str(base), "--dataset", str(train_file), "--eval_dataset", str(val_file),
            "--output_dir", str(out), "--quantization", "none", "--lora_r", "4", "--lora_alpha", "8",
            "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--max_length", "512",
            "--logging_steps", "1", "--eval_each_epoch", "false", "--seed", "0", "--num_threads", "1"]


def test_train_calls_the_passed_callbacks(tiny_base_dir: Path, tmp_path: Path) -> None:
    defaults = list(hf_trainer.DEFAULT_CALLBACKS)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    cfg = RunConfig(model=str(tiny_base_dir), dataset=[str(train_file)], eval_dataset=None,
                    output_dir=str(tmp_path / "out"), quantization="none", lora_r=4, lora_alpha=8,
                    max_steps=2, per_device_train_batch_size=4, max_length=512, logging_steps=1,
                    eval_each_epoch=False, seed=0, num_threads=1)
    recorder = Recorder()
    trainer = train(cfg, callbacks=[recorder])
    assert recorder in trainer.callback_handler.callbacks
    names = [name for name, _ in recorder.events]
    assert names[0] == "train_begin" and names[-1] == "train_end"
    assert [step for name, step in recorder.events if name == "step_end"] == [1, 2]
    assert "log" in names
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert "engine.training: saved adapter" in (tmp_path / "out" / "train.log").read_text()
    assert hf_trainer.DEFAULT_CALLBACKS == defaults  # nothing global was touched
    assert root.handlers == handlers and root.level == level  # train.log's handler came and went


@pytest.mark.parametrize(("budget", "steps"), [([], 3), (["--max_train_minutes", "1e-9"], 1)])
def test_train_job_reports_progress_without_patching_default_callbacks(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logging: None,
    budget: list[str], steps: int,
) -> None:
    """A job's progress ends at the step its training ended at: the last, or the one where the recipe's
    time budget stopped it."""
    import engine.champion
    from engine import train_job

    def fake_evaluate_pair(challenger: Any, champion: Any, datasets: Any, **kw: Any) -> dict[str, Any]:
        kw["progress"]("eval", 1, 1)
        return {"champion_version": kw["champion_version"], "datasets": {}, "hard_violations": {}}

    monkeypatch.setattr(engine.champion, "evaluate_pair", fake_evaluate_pair)
    defaults = list(hf_trainer.DEFAULT_CALLBACKS)
    run_dir = tmp_path / "ft-v2"
    argv = ["--run-dir", str(run_dir), "--champion-version", "ft-v1", "--",
            *_tiny_flags(tiny_base_dir, tmp_path / "data", run_dir, steps=3), *budget]
    assert train_job.main(argv) == 0
    assert hf_trainer.DEFAULT_CALLBACKS == defaults
    progress = json.loads((run_dir / train_job.PROGRESS_FILE).read_text())
    assert progress["stage"] == "done" and progress["step"] == steps and progress["max_steps"] == 3
    assert [step for step, _ in progress["loss"]] == list(range(1, steps + 1))
    assert progress["eval_stage"] == "eval" and progress["eval_done"] == progress["eval_total"] == 1
    comparison = json.loads((run_dir / train_job.COMPARISON_FILE).read_text())
    assert comparison["champion_version"] == "ft-v1"
    assert (run_dir / "adapter_model.safetensors").is_file()


def test_parse_run_config_merges_repeated_flags() -> None:
    argv = ["--dataset", "a.jsonl", "--lora_r", "8", "--dataset", "b.jsonl", "c.jsonl"]
    assert merge_repeated_flags(argv) == ["--lora_r", "8", "--dataset", "a.jsonl", "b.jsonl", "c.jsonl"]
    cfg = parse_run_config(argv)
    assert cfg.dataset == ["a.jsonl", "b.jsonl", "c.jsonl"] and cfg.lora_r == 8


# Training pools that cannot leak: the check train() runs before the model loads.
def _leaky_pool(tmp_path: Path) -> tuple[Path, Path]:
    """tiny_rows() as the pool, and a frozen set holding its 5th case under other ids and message."""
    rows = tiny_rows()
    frozen_row = json.loads(json.dumps(rows[4]))
    frozen_row["id"] = frozen_row["input"]["case_id"] = "C-EV-1"
    frozen_row["input"]["customer"]["id"], frozen_row["input"]["order"]["id"] = "U-EV", "O-EV"
    frozen_row["input"]["message"] = "The eval set's own wording of the case."
    return write_jsonl(tmp_path / "pool.jsonl", rows), write_jsonl(tmp_path / "eval.jsonl", [frozen_row])


def test_train_refuses_a_pool_with_a_leaked_row_before_loading_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.training

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(engine.training, "build_trainer", no_model)  # loads the tokenizer and model
    pool, frozen = _leaky_pool(tmp_path)
    cfg = RunConfig(model="default-base", dataset=[str(pool)], eval_dataset=None,
                    output_dir=str(tmp_path / "out"),
                    frozen_sets=[str(frozen), str(tmp_path / "stress.jsonl")])
    with pytest.raises(TrainingPoolLeak) as info:
        train(cfg)
    assert str(info.value).startswith("1 training row(s) match a frozen evaluation set")
    assert f"{pool}:5 (C-000005) ~ {frozen}:1 (C-EV-1) by fields key" in str(info.value)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_check_frozen_sets_reads_exports_and_can_be_switched_off(tmp_path: Path) -> None:
    from engine.sft_data import check_frozen_sets, row_to_example
    from policies.prompt import PromptFormat

    pool, frozen = _leaky_pool(tmp_path)
    clean = write_jsonl(tmp_path / "clean.jsonl", tiny_rows()[:4])
    fmt = PromptFormat(policy="titles", instructions="short", max_message_chars=0, case="fields")
    assert check_frozen_sets([clean], fmt, [str(frozen)]) == {
        "status": "checked", "frozen_sets": [str(frozen)], "rows_checked": 4, "missing": []}
    typo = str(tmp_path / "evl.jsonl")  # a mistyped set beside a real one: the real one checked, it named
    assert check_frozen_sets([clean], fmt, [str(frozen), typo]) == {
        "status": "checked", "frozen_sets": [str(frozen)], "rows_checked": 4, "missing": [typo]}
    for off in ([], ["none"]):
        assert check_frozen_sets([pool], fmt, off)["status"] == "disabled"
    assert check_frozen_sets([pool], fmt, [str(tmp_path / "no.jsonl")])["status"] == "no frozen set found"
    # an export ({"messages": ...} rendered in the model's format) of the leaked case
    example = row_to_example(tiny_rows()[4], fmt)
    export = write_jsonl(tmp_path / "export.jsonl", [{"messages": example["prompt"] + example["completion"]}])
    with pytest.raises(TrainingPoolLeak, match=r"export\.jsonl:1 ~ .*eval\.jsonl:1 \(C-EV-1\)"):
        check_frozen_sets([clean, export], fmt, [str(frozen)])
    assert RunConfig().frozen_sets == ["data/generated/eval.jsonl", "data/generated/stress.jsonl"]


def test_committed_training_data_does_not_leak_the_eval_set() -> None:
    """The Runner's base dataset (data/generated/train.jsonl) passes the check train() runs."""
    from engine.registry import REPO_ROOT, resolve_model
    from engine.sft_data import check_frozen_sets
    from policies.prompt import PromptFormat

    files = [REPO_ROOT / "data" / "generated" / f for f in ("train.jsonl", "validation.jsonl")]
    if not all(f.is_file() for f in files):
        pytest.skip("data/generated not generated")
    for fmt in (resolve_model("default-ft").prompt_format, PromptFormat()):
        result = check_frozen_sets(files, fmt, RunConfig().frozen_sets)
        assert result["status"] == "checked" and result["rows_checked"] == 3300


def test_train_with_the_check_off_says_so(tiny_base_dir: Path, tmp_path: Path) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    cfg = RunConfig(model=str(tiny_base_dir), dataset=[str(train_file)], eval_dataset=None,
                    output_dir=str(tmp_path / "out"), quantization="none", lora_r=4, lora_alpha=8,
                    max_steps=1, per_device_train_batch_size=4, max_length=512, logging_steps=1,
                    eval_each_epoch=False, seed=0, num_threads=1, frozen_sets=[])
    train(cfg)
    log_text = (tmp_path / "out" / "train.log").read_text()
    assert "WARNING engine.train_setup: training rows NOT checked" in log_text
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["leak_check"]["status"] == "disabled"


def test_lm_corpus_leaves_out_a_held_out_case_whatever_its_ids_and_message(tmp_path: Path) -> None:
    """The base model's corpus (engine.lm_corpus) never holds a held-out case's prompt."""
    from engine.lm_corpus import CorpusConfig, lm_texts, render_turns
    from policies import parse_case
    from policies.prompt import build_messages
    from policies.synth import iter_lm_texts

    first = json.loads(next(iter_lm_texts(1, seed=0)))  # the corpus's first case, seed 0
    held = {**first, "case_id": "C-EV-1", "message": "The held-out file words it otherwise."}
    held["customer"] = {**first["customer"], "id": "U-EV"}
    held_file = write_jsonl(tmp_path / "eval.jsonl", [{"id": "C-EV-1", "input": held}])
    cfg = CorpusConfig(n_cases=33, doc_repeats=1, exclude=[str(held_file)])
    prompt = render_turns(build_messages(parse_case(held), cfg.prompt_format()))
    unchecked = lm_texts(CorpusConfig(n_cases=33, doc_repeats=1, exclude=[]), seed=0)
    assert prompt in unchecked  # the tiny format drops ids and message: the same prompt
    texts = lm_texts(cfg, seed=0)
    assert prompt not in texts and len(texts) == len(unchecked)  # redrawn, not dropped


def test_a_max_length_the_prompts_fill_is_refused_by_name(tiny_base_dir: Path, tmp_path: Path,
                                                          root_logging: None) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    cfg = RunConfig(model=str(tiny_base_dir), dataset=[str(train_file)], eval_dataset=None,
                    output_dir=str(tmp_path / "out"), quantization="none", lora_r=4, lora_alpha=8,
                    max_steps=1, per_device_train_batch_size=4, max_length=16, logging_steps=1,
                    eval_each_epoch=False, seed=0, num_threads=1)
    with pytest.raises(ConfigError, match=r"max_length 16: \d+ of \d+ training examples .*raise max_length"):
        train(cfg)
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_dropped_examples_are_counted_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from engine.train_setup import check_kept

    with caplog.at_level(logging.WARNING, logger="engine.train_setup"):
        check_kept(46 * 64, 32000, 156, "training")
        check_kept(300, 300, 156, "evaluation")  # all kept: nothing said
    assert [r.getMessage() for r in caplog.records] == [
        "max_length 156: 29056 of 32000 training examples have no answer token within it (the prompt "
        "fills it) and were dropped; raise max_length to train on them"]


def test_lm_corpus_reads_the_messages_of_its_own_cases_only_when_asked() -> None:
    """``messages``: each corpus case's customer message is a text of its own (the items in lower case),
    and the prompts stay what they were; ``prompt_policy_facts`` renders the prompts with the facts."""
    from engine.lm_corpus import CorpusConfig, lm_texts
    from policies import parse_case
    from policies.synth import iter_lm_texts

    plain = lm_texts(CorpusConfig(n_cases=12, doc_repeats=1, exclude=[]), seed=3)
    with_messages = lm_texts(CorpusConfig(n_cases=12, doc_repeats=1, exclude=[], messages=True), seed=3)
    cases = [parse_case(json.loads(t)) for t in iter_lm_texts(12, seed=3)]
    assert set(with_messages) - set(plain) == {case.message for case in cases}
    assert set(plain) < set(with_messages)
    assert not any(case.message in text for case in cases for text in plain)
    assert any(case.order.item.lower() in case.message.lower() for case in cases)
    facts = lm_texts(CorpusConfig(n_cases=12, doc_repeats=1, exclude=[], prompt_policy_facts=True), seed=3)
    assert any("auto_limit=" in text for text in set(facts) - set(plain))
    assert CorpusConfig(prompt_policy_facts=True).prompt_format().policy_facts
    # message_after_prompt: each message ends its own case's prompt text; no text holds a message alone
    after = lm_texts(CorpusConfig(n_cases=12, doc_repeats=1, exclude=[], messages=True,
                                  message_after_prompt=True), seed=3)
    assert len(after) == len(plain) and not {case.message for case in cases} & set(after)
    for case in cases:
        [text] = [t for t in after if t.endswith(case.message)]
        assert f"item={case.order.item}" in text  # the item named in the prompt, then in the message


def test_dataset_num_proc_reaches_the_trainer() -> None:
    from engine.training import sft_config

    assert sft_config(RunConfig(dataset_num_proc=3), has_eval=False).dataset_num_proc == 3
    assert sft_config(RunConfig(), has_eval=False).dataset_num_proc is None


def test_tf32_is_asked_of_the_trainer_only_where_a_gpu_has_it() -> None:
    import torch

    from engine.train_setup import trainer_args

    expected = True if torch.cuda.is_available() else None
    assert trainer_args(RunConfig(tf32=True))["tf32"] is expected
    assert trainer_args(RunConfig())["tf32"] is None


def test_eval_dataset_none_on_the_command_line_means_no_validation_set() -> None:
    from engine.training import parse_run_config

    assert parse_run_config(["--eval_dataset", "none"]).eval_dataset is None
    assert parse_run_config(["--eval_dataset", "data/generated/validation.jsonl"]).eval_dataset


def test_a_time_budget_stops_training_and_keeps_the_adapter(tiny_base_dir: Path, tmp_path: Path) -> None:
    """A run that reaches its time budget stops after that step, saves the adapter as it stands and says
    so in train.log and metrics.json; a run within its budget goes to the end."""
    train_file = write_jsonl(tmp_path / "train.jsonl", tiny_rows())
    base = dict(model=str(tiny_base_dir), dataset=[str(train_file)], eval_dataset=None, quantization="none",
                lora_r=4, lora_alpha=8, max_steps=4, per_device_train_batch_size=4, max_length=512,
                logging_steps=1, eval_each_epoch=False, seed=0, num_threads=1)
    recorder = Recorder()
    train(RunConfig(**base, output_dir=str(tmp_path / "short"), max_train_minutes=1e-9), callbacks=[recorder])
    assert [step for name, step in recorder.events if name == "step_end"] == [1]
    short = tmp_path / "short"
    assert (short / "adapter_model.safetensors").is_file()
    metrics = json.loads((short / "metrics.json").read_text())
    assert metrics["time_budget"] == {"minutes": 1e-9, "stopped_at_step": 1, "max_steps": 4,
                                      "schedule": "fit", "fitted_steps": None, "seconds_per_step": None,
                                      "paused_s": 0.0, "evaluation_s": None,
                                      "kept_for_evaluations_s": None}
    assert "time budget: " in (short / "train.log").read_text()
    assert "training stops here" in (short / "train.log").read_text()

    train(RunConfig(**base, output_dir=str(tmp_path / "whole"), max_train_minutes=60))
    metrics = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    budget = metrics["time_budget"]
    assert {k: budget[k] for k in ("minutes", "stopped_at_step", "max_steps", "fitted_steps")} == {
        "minutes": 60, "stopped_at_step": None, "max_steps": 4, "fitted_steps": None}
    assert budget["seconds_per_step"] > 0  # timed, and all four steps fit
    assert len([e for e in metrics["log_history"] if "loss" in e]) == 4


@pytest.mark.parametrize("minutes", [0, -1, float("nan"), 10_081])
def test_a_time_budget_out_of_range_is_refused_by_name(minutes: float) -> None:
    with pytest.raises(ConfigError, match=r"max_train_minutes: .*; must be > 0 and <= 10080 \(or unset\)"):
        RunConfig(max_train_minutes=minutes).check()


def _budget_rank(rank: int, port: int, out: str) -> None:
    """One of two gloo ranks: rank 0 has been training for 100 s, rank 1 for none; both check a budget
    of one minute after one step and write what they decided."""
    import time
    from types import SimpleNamespace

    import torch.distributed as dist

    from engine.train_setup import TimeBudget

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        budget = TimeBudget(1.0, began=time.time() - (100 if rank == 0 else 0))
        state = SimpleNamespace(global_step=1, max_steps=10)
        control = SimpleNamespace(should_training_stop=False)
        budget.on_train_begin(None, state, control)
        budget.on_step_end(None, state, control)
        decided = [control.should_training_stop, budget.stopped_at]
        Path(out, f"rank{rank}.json").write_text(json.dumps(decided))
    finally:
        dist.destroy_process_group()


def test_ranks_agree_on_the_step_a_time_budget_stops_at(tmp_path: Path) -> None:
    """The rank whose clock says "not yet" stops with the one whose clock says "now": otherwise it would
    wait forever on the other's gradients."""
    import torch.multiprocessing as mp

    from tests.engine.serving import free_port

    mp.spawn(_budget_rank, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [[True, 1], [True, 1]]
