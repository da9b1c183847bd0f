"""scripts/train_qlora_sft.py under ``accelerate launch`` with two CPU processes (gloo): the loss falls,
rank 0 alone writes one adapter, and the run leaves the same artefacts as a single process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from engine.training import parse_run_config, train
from tests.conftest import tiny_rows, write_jsonl
from tests.engine.serving import ROOT, free_port

STEPS = 6


def run_config(tmp_path: Path, tiny_base_dir: Path) -> Path:
    train_file = write_jsonl(tmp_path / "data" / "train.jsonl", tiny_rows())
    val = write_jsonl(tmp_path / "data" / "validation.jsonl", tiny_rows()[:4])
    config = {"model": str(tiny_base_dir), "dataset": [str(train_file)], "eval_dataset": str(val),
              "frozen_sets": [], "quantization": "none", "lora_r": 8, "lora_alpha": 16, "learning_rate": 2e-2,
              "max_steps": STEPS, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
              "max_length": 512, "logging_steps": 1, "eval_each_epoch": False, "seed": 0, "num_threads": 1,
              "gradient_checkpointing": True}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def tensors(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict


def test_two_cpu_processes_train_one_adapter(tiny_base_dir: Path, tmp_path: Path) -> None:
    config = run_config(tmp_path, tiny_base_dir)
    two, one = tmp_path / "two", tmp_path / "one"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu-2proc.yaml"), "--main_process_port", str(free_port()),
           str(ROOT / "scripts/train_qlora_sft.py"), "--config", str(config), "--output_dir", str(two)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    # Both ranks trained: each logs the effective batch of the whole run.
    batch_line = "effective batch size 8 = 2 per device x 2 processes x 2 gradient accumulation"
    assert done.stderr.count(batch_line) == 2

    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["batch_size"] == {"per_device": 2, "processes": 2, "gradient_accumulation": 2,
                                     "effective": 8}
    # measured on the model: each process held every weight (DDP replicates; nothing was sharded)
    assert metrics["sharding"] == {"mode": "ddp", "processes": 2, "sharded_tensors": 0, "local_share": 1.0}
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert len(losses) == STEPS and losses[-1] < losses[0]
    log = (two / "train.log").read_text()
    assert log.count("saved adapter to") == 1 and log.count("effective batch size") == 1  # rank 0 alone

    train(parse_run_config(["--config", str(config), "--output_dir", str(one)]))
    skip = {"training_args.bin"}  # pickled TrainingArguments: which rank and world size they ran with
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert {p.name for p in two.iterdir()} - skip >= {"adapter_model.safetensors", "run_config.json",
                                                      "train.log"}
    assert tensors(two) == tensors(one)
    single = json.loads((one / "metrics.json").read_text())
    assert single["batch_size"]["processes"] == 1 and single["sharding"]["mode"] == "single"


def test_two_processes_stop_together_at_a_time_budget(tiny_base_dir: Path, tmp_path: Path) -> None:
    """Each rank reads its own clock; they agree on the step to stop at (the largest elapsed time), so
    neither waits forever on the other's gradients, and rank 0 saves the adapter once."""
    config = run_config(tmp_path, tiny_base_dir)
    out = tmp_path / "budget"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs/accelerate/cpu-2proc.yaml"), "--main_process_port", str(free_port()),
           str(ROOT / "scripts/train_qlora_sft.py"), "--config", str(config), "--output_dir", str(out),
           "--max_train_minutes", "1e-9", "--gradient_checkpointing", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stderr.count(f"at step 1 of {STEPS}; training stops here") == 2  # both ranks, one step
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["time_budget"] == {"minutes": 1e-9, "stopped_at_step": 1, "max_steps": STEPS,
                                      "schedule": "fit", "fitted_steps": None, "seconds_per_step": None,
                                      "paused_s": 0.0, "evaluation_s": None,
                                      "kept_for_evaluations_s": None}
    assert (out / "train.log").read_text().count("saved adapter to") == 1
    assert (out / "adapter_model.safetensors").is_file()


def test_an_fsdp_config_on_cpus_says_it_trains_without_fsdp(
    tiny_base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """accelerate shards only on accelerators: under an FSDP config (ACCELERATE_USE_FSDP) on CPUs it
    quietly trains without FSDP. The run says so, and metrics.json records how the weights were held."""
    config = run_config(tmp_path, tiny_base_dir)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with caplog.at_level(logging.WARNING, logger="engine.train_setup"):
        train(parse_run_config(["--config", str(config), "--output_dir", str(tmp_path / "o"),
                                "--max_steps", "2"]))
    said = "the accelerate config asks for FSDP, but these processes train without it (one process)"
    assert said in caplog.text
    held = json.loads((tmp_path / "o" / "metrics.json").read_text())["sharding"]
    assert held == {"mode": "single", "processes": 1, "sharded_tensors": 0, "local_share": 1.0}


def test_the_script_closes_the_process_group_it_trained_in(tmp_path: Path) -> None:
    """end_processes (called by the script after a run) waits for every rank, then closes the group, so
    no rank's gloo threads are left to abort the process at exit; outside a distributed run it does
    nothing."""
    import torch.distributed as dist

    from engine.train_setup import end_processes

    end_processes()  # no group: nothing to close
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    end_processes()
    assert not dist.is_initialized()
