"""DPO on preference pairs (engine/dpo.py): the two row shapes, refusals naming the line, and a real
TRL DPOTrainer run on the micro model, fresh and continuing an adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from engine.dpo import load_preferences, preference_example
from engine.sft_data import DatasetError, RunConfig
from engine.training import train
from policies import parse_case
from policies.prompt import build_messages
from tests.conftest import TINY_FORMAT, tiny_rows, write_jsonl


def _pairs() -> list[dict]:
    rows = []
    for r in tiny_rows():
        rejected = dict(r["output"], decision="ESCALATE" if r["output"]["decision"] != "ESCALATE" else "DENY")
        rows.append({"id": r["id"], "input": r["input"], "chosen": r["output"], "rejected": rejected})
    return rows


def test_both_row_shapes_give_the_same_example() -> None:
    row = _pairs()[0]
    from_case = preference_example(row, TINY_FORMAT)
    assert from_case["prompt"] == build_messages(parse_case(row["input"]), TINY_FORMAT)
    conversational = {"prompt": from_case["prompt"], "chosen": from_case["chosen"],
                      "rejected": from_case["rejected"]}
    assert preference_example(conversational, TINY_FORMAT) == from_case
    assert json.loads(from_case["rejected"][0]["content"])["decision"] == row["rejected"]["decision"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("rejected"), "missing 'rejected'"),
    (lambda r: r.update(rejected=r["chosen"]), "the same answer"),
    (lambda r: r.update(chosen={"decision": "MAYBE"}), "chosen is not a valid answer"),
    (lambda r: r.pop("input"), "missing 'input'"),
])
def test_bad_rows_are_refused_naming_the_line(tmp_path: Path, change, message: str) -> None:
    rows = _pairs()[:3]
    change(rows[1])
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DatasetError, match=message) as err:
        load_preferences(path, TINY_FORMAT)
    assert ":2" in str(err.value)


class _Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003
        self.steps.append(state.global_step)


def _cfg(model: Path, pairs: Path, out: Path) -> RunConfig:
    return RunConfig(method="dpo", model=str(model), dataset=[str(pairs)], eval_dataset=None,
                     output_dir=str(out), quantization="none", lora_r=4, lora_alpha=8, learning_rate=5e-3,
                     max_steps=3, per_device_train_batch_size=4, max_length=512, logging_steps=1,
                     eval_each_epoch=False, seed=0, num_threads=1, frozen_sets=[])


@pytest.mark.slow
def test_dpo_trains_a_fresh_adapter_and_continues_one(tiny_base_dir: Path, tiny_ft_dir: Path,
                                                       tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", _pairs())
    steps = _Steps()
    fresh = tmp_path / "fresh"
    trainer = train(_cfg(tiny_base_dir, pairs, fresh), callbacks=[steps])
    assert steps.steps == [1, 2, 3]
    assert "rewards/margins" in trainer.state.log_history[0]  # a DPO loss, not SFT's
    metrics = json.loads((fresh / "metrics.json").read_text())
    assert metrics["method"] == "dpo" and metrics["train_examples"] == len(_pairs())
    assert json.loads((fresh / "run_config.json").read_text())["config"]["method"] == "dpo"

    cont = tmp_path / "continued"
    train(_cfg(tiny_ft_dir, pairs, cont))
    assert not (cont / "ref").exists()  # TRL's frozen reference copy is not saved with the adapter
    before, after = (load_file(str(d / "adapter_model.safetensors")) for d in (tiny_ft_dir, cont))
    assert set(before) == set(after)  # the same adapter, continued
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_dpo_run_keeps_its_time_budget(tiny_base_dir: Path, tmp_path: Path) -> None:
    """A budget used up at once: one step, then the adapter saved and the stop recorded, as for SFT."""
    cfg = _cfg(tiny_base_dir, write_jsonl(tmp_path / "pairs.jsonl", _pairs()), tmp_path / "budget")
    cfg.max_train_minutes = 1e-9
    steps = _Steps()
    train(cfg, callbacks=[steps])
    assert steps.steps == [1] and (tmp_path / "budget" / "adapter_model.safetensors").is_file()
    budget = json.loads((tmp_path / "budget" / "metrics.json").read_text())["time_budget"]
    assert budget == {"minutes": 1e-9, "stopped_at_step": 1, "max_steps": 3, "schedule": "fit",
                      "fitted_steps": None, "seconds_per_step": None, "paused_s": 0.0,
                      "evaluation_s": None, "kept_for_evaluations_s": None}
