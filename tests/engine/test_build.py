"""engine.build + engine.loading: our tokenizer, the micro base, one token stream for train and inference."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import SFTTrainer

from engine.build import BuildError, train_tokenizer
from engine.loading import is_own_tokenizer, load_base_model, load_tokenizer, peft_wrapping, pick_dtype
from engine.sft_data import RunConfig, row_to_example
from engine.train_setup import lora_config
from engine.training import sft_config
from policies import parse_answer, parse_case
from policies.prompt import answer_json, build_messages, render_prompt
from tests.conftest import TINY_FORMAT, tiny_cases, tiny_rows


def test_tokenizer_splits_digits_and_has_chat_template(tmp_path: Path) -> None:
    tok = train_tokenizer(["price 129.99 days 15 <|im_start|>user hi"] * 20, 300, tmp_path)
    assert [t for t in tok.tokenize("1234") if t.strip("Ġ")] == ["1", "2", "3", "4"]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert is_own_tokenizer(tmp_path)
    with pytest.raises(BuildError):
        train_tokenizer(["x"], 100)


def test_load_tokenizer_keeps_our_pre_tokenizer(tiny_base_dir: Path) -> None:
    tok = load_tokenizer(tiny_base_dir)
    raw = json.loads((tiny_base_dir / "tokenizer.json").read_text())
    assert raw["pre_tokenizer"]["type"] == "Sequence"  # Digits + ByteLevel, not Qwen2's regex
    assert tok.padding_side == "left" and tok.pad_token is not None
    from tokenizers import Tokenizer

    text = render_prompt(tok, parse_case(tiny_cases()[0]), TINY_FORMAT)
    assert (
        tok(text, add_special_tokens=False)["input_ids"]
        == Tokenizer.from_file(str(tiny_base_dir / "tokenizer.json"))
        .encode(text, add_special_tokens=False)
        .ids
    )


def test_base_model_loads_and_is_deterministic(tiny_base_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import build_tiny_base

    again = build_tiny_base(tmp_path / "again")
    a, b = load_base_model(tiny_base_dir, quantize="none"), load_base_model(again, quantize="none")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert pick_dtype("cpu") == torch.float32
    assert a.policyops_quantize == "none"


def test_training_and_inference_tokenize_the_prompt_alike(tiny_base_dir: Path, tmp_path: Path) -> None:
    """SFTTrainer trains on exactly the ids inference renders, with loss on the answer only."""
    row = tiny_rows()[0]
    example = row_to_example(row, TINY_FORMAT)
    tok = load_tokenizer(tiny_base_dir)
    model = load_base_model(tiny_base_dir, quantize="none")
    cfg = RunConfig(
        model=str(tiny_base_dir),
        output_dir=str(tmp_path),
        lora_r=2,
        lora_alpha=4,
        max_length=2048,
        eval_each_epoch=False,
    )
    with peft_wrapping():  # as engine.training does around the trainer's set-up
        trainer = SFTTrainer(
            model=model,
            args=sft_config(cfg, has_eval=False),
            train_dataset=Dataset.from_list([example]),
            processing_class=tok,
            peft_config=lora_config(cfg),
        )
    item = trainer.train_dataset[0]
    ids, labels = item["input_ids"], item["labels"]
    case = parse_case(row["input"])
    prompt_text = render_prompt(load_tokenizer(tiny_base_dir), case, TINY_FORMAT)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    n_prompt = sum(1 for label in labels if label == -100)
    assert ids[:n_prompt] == prompt_ids
    answer_ids = tok(answer_json(parse_answer(row["output"])) + "<|im_end|>\n", add_special_tokens=False)[
        "input_ids"
    ]
    assert ids[n_prompt:] == answer_ids and labels[n_prompt:] == answer_ids
    assert build_messages(case, TINY_FORMAT)[0]["content"] == example["prompt"][0]["content"]


def test_build_base_model_trains_on_the_device_it_is_given_and_saves_fp32(tmp_path: Path) -> None:
    """``device`` moves the training, not the result: the saved weights are fp32 on the CPU, the batches
    are drawn on the CPU (one seed, the same batches on any device), and build_info names the device."""
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    config = BaseModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                             intermediate_size=64, block_size=32, batch_size=4, steps=3)
    a = build_base_model(tmp_path / "a", texts, config, seed=1, device="cpu")
    b = build_base_model(tmp_path / "b", texts, config, seed=1)
    assert a["device"] == "cpu" and a["final_loss"] == b["final_loss"]
    model = load_base_model(str(tmp_path / "a"), quantize="none", dtype="fp32")
    assert next(model.parameters()).dtype == torch.float32
    assert json.loads((tmp_path / "a" / "build_info.json").read_text())["device"] == "cpu"


def test_base_precision_is_checked_by_name_and_trains_in_fp32_on_the_cpu(tmp_path: Path) -> None:
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    shape = dict(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=64, block_size=32, batch_size=4, steps=2)
    with pytest.raises(BuildError, match=r"precision: expected one of fp32, tf32, bf16, got 'fp8'"):
        build_base_model(tmp_path / "x", texts, BaseModelConfig(**shape, precision="fp8"), seed=1)
    fp32 = build_base_model(tmp_path / "a", texts, BaseModelConfig(**shape), seed=1)
    bf16 = build_base_model(tmp_path / "b", texts, BaseModelConfig(**shape, precision="bf16"), seed=1)
    assert fp32["final_loss"] == bf16["final_loss"]  # a GPU setting: the CPU trains in fp32 either way
    assert not torch.backends.cuda.matmul.allow_tf32


def test_trained_embeddings_stay_tied_only_to_a_head_that_was_tied(tiny_base_dir: Path) -> None:
    # PEFT warns and does nothing when asked to keep an untied head tied: the request follows the base.
    from transformers import AutoModelForCausalLM

    from engine.sft_data import RunConfig
    from engine.train_setup import lora_config, ties_embeddings

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    assert ties_embeddings(model) is bool(model.config.tie_word_embeddings)
    trained = RunConfig(train_embeddings=True)
    assert lora_config(trained, tied_embeddings=True).ensure_weight_tying is True
    assert lora_config(trained, tied_embeddings=False).ensure_weight_tying is False
    assert lora_config(RunConfig(train_embeddings=False), tied_embeddings=True).ensure_weight_tying is False


def test_a_base_build_stops_at_its_time_budget_and_saves_the_model(tmp_path: Path) -> None:
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    shape = dict(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=64, block_size=32, batch_size=4, steps=5)
    with pytest.raises(BuildError, match=r"max_minutes: expected a number > 0 \(or none\), got 0"):
        build_base_model(tmp_path / "x", texts, BaseModelConfig(**shape, max_minutes=0), seed=1)
    short = build_base_model(tmp_path / "a", texts, BaseModelConfig(**shape, max_minutes=1e-9), seed=1)
    assert short["steps_done"] == 1 and (tmp_path / "a" / "model.safetensors").is_file()
    whole = build_base_model(tmp_path / "b", texts, BaseModelConfig(**shape, max_minutes=60), seed=1)
    assert whole["steps_done"] == 5


def test_a_base_build_fits_its_schedule_to_its_time_budget(tmp_path: Path, monkeypatch) -> None:
    """By the build's clock each step takes 2 s and 40 are planned; a one-minute budget fits 28: the
    build ends there with its one-cycle schedule near its floor (10% of the peak), and says so in
    build_info.json. 'cut' keeps the plan and stops where the budget runs out (step 30), well above it."""
    import engine.build as build
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    shape = dict(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                 intermediate_size=64, block_size=32, batch_size=4, steps=40, max_minutes=1.0)
    rates: list[float] = []
    real_step = torch.optim.AdamW.step

    def step_and_record(self, *args, **kwargs):  # the rate each step trains at
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    for schedule, steps in (("fit", 28), ("cut", 30)):
        # two seconds a step: the clock is read at the build's start, then once a step
        monkeypatch.setattr(build, "clock", functools.partial(next, itertools.count(2.0, 2.0)))
        rates.clear()
        config = BaseModelConfig(**shape, budget_schedule=schedule)
        info = build_base_model(tmp_path / schedule, texts, config, seed=1)
        saved = json.loads((tmp_path / schedule / "build_info.json").read_text())
        assert saved["steps_done"] == info["steps_done"] == len(rates) == steps
        if schedule == "fit":
            assert info["fitted_steps"] == 28 and info["seconds_per_step"] == pytest.approx(2.0)
            assert rates[-1] < 0.15 * max(rates)
        else:
            assert info["fitted_steps"] is None and rates[-1] > 0.25 * max(rates)
    refused = BaseModelConfig(budget_schedule="trim").problems()
    assert refused == ["budget_schedule: 'trim'; must be 'fit' or 'cut'"]


def test_a_base_build_fitted_inside_its_warm_up_warms_on_without_a_jump(tmp_path: Path, monkeypatch) -> None:
    """Half the 40 planned steps warm up; the budget fits 28, found at step 3 (0.2 of the peak). The new
    schedule's own warm-up (14 steps) would put step 3 at 0.29; instead the rest of the old one, shrunk
    as the run shrank (17 steps -> 12), climbs on from 0.2 to the peak at step 15, then the cosine falls."""
    import engine.build as build
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    config = BaseModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                             intermediate_size=64, block_size=32, batch_size=4, steps=40, max_minutes=1.0,
                             warmup=0.5)
    rates: list[float] = []
    real_step = torch.optim.AdamW.step

    def step_and_record(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"] / config.lr)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    monkeypatch.setattr(build, "clock", functools.partial(next, itertools.count(2.0, 2.0)))
    info = build_base_model(tmp_path / "fit", texts, config, seed=1)
    assert info["fitted_steps"] == 28 == len(rates)
    assert rates[:4] == pytest.approx([0.05, 0.1, 0.15, 0.2])  # the old warm-up, then on from where it was
    assert rates[15] == pytest.approx(1.0) and max(rates) == pytest.approx(1.0)
    climb = [b - a for a, b in itertools.pairwise(rates[3:16])]
    assert climb == pytest.approx([0.8 / 12] * 12)  # a straight line, no jump
    assert all(a >= b for a, b in itertools.pairwise(rates[15:])) and rates[-1] < 0.15


def test_a_base_build_that_slows_after_its_fit_ends_earlier_on_its_schedule(tmp_path: Path,
                                                                          monkeypatch) -> None:
    """Fitted to 28 steps at 2 s a step; from step 12 a step takes 3 s (another job on the machine). The
    build's watch ends it earlier again, with the rest of its one-cycle squeezed in: it stops inside its
    minute, on its floor, and the rate never jumps."""
    import engine.build as build
    from engine.build import BaseModelConfig, build_base_model

    texts = [json.dumps(case) for case in tiny_cases()] * 3
    config = BaseModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                             intermediate_size=64, block_size=32, batch_size=4, steps=40, max_minutes=1.0)
    rates: list[float] = []
    real_step = torch.optim.AdamW.step

    def step_and_record(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"] / config.lr)
        return real_step(self, *args, **kwargs)

    reads = [2.0]  # the build's start, then one read a step
    for step in range(1, 60):
        reads.append(reads[-1] + (2.0 if step < 12 else 3.0))
    monkeypatch.setattr(torch.optim.AdamW, "step", step_and_record)
    monkeypatch.setattr(build, "clock", functools.partial(next, iter(reads)))
    info = build_base_model(tmp_path / "slow", texts, config, seed=1)
    assert info["fitted_steps"] == info["steps_done"] == len(rates) < 28
    assert reads[len(rates)] - reads[0] <= 60  # inside the budget
    peak = rates.index(max(rates))
    assert all(a >= b for a, b in itertools.pairwise(rates[peak:])) and rates[-1] < 0.15
    assert max(a - b for a, b in itertools.pairwise(rates[peak:])) < 0.2  # no cliff at the shrink
