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

from engine.sft_data import RunConfig
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


def test_train_job_reports_progress_without_patching_default_callbacks(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logging: None
) -> None:
    import engine.champion
    from engine import train_job

    def fake_evaluate_pair(challenger: Any, champion: Any, datasets: Any, **kw: Any) -> dict[str, Any]:
        kw["progress"]("eval", 1, 1)
        return {"champion_version": kw["champion_version"], "datasets": {}, "hard_violations": {}}

    monkeypatch.setattr(engine.champion, "evaluate_pair", fake_evaluate_pair)
    defaults = list(hf_trainer.DEFAULT_CALLBACKS)
    run_dir = tmp_path / "ft-v2"
    argv = ["--run-dir", str(run_dir), "--champion-version", "ft-v1", "--",
            *_tiny_flags(tiny_base_dir, tmp_path / "data", run_dir, steps=3)]
    assert train_job.main(argv) == 0
    assert hf_trainer.DEFAULT_CALLBACKS == defaults
    progress = json.loads((run_dir / train_job.PROGRESS_FILE).read_text())
    assert progress["stage"] == "done" and progress["step"] == progress["max_steps"] == 3
    assert [step for step, _ in progress["loss"]] == [1, 2, 3]
    assert progress["eval_stage"] == "eval" and progress["eval_done"] == progress["eval_total"] == 1
    comparison = json.loads((run_dir / train_job.COMPARISON_FILE).read_text())
    assert comparison["champion_version"] == "ft-v1"
    assert (run_dir / "adapter_model.safetensors").is_file()


def test_parse_run_config_merges_repeated_flags() -> None:
    argv = ["--dataset", "a.jsonl", "--lora_r", "8", "--dataset", "b.jsonl", "c.jsonl"]
    assert merge_repeated_flags(argv) == ["--lora_r", "8", "--dataset", "a.jsonl", "b.jsonl", "c.jsonl"]
    cfg = parse_run_config(argv)
    assert cfg.dataset == ["a.jsonl", "b.jsonl", "c.jsonl"] and cfg.lora_r == 8
