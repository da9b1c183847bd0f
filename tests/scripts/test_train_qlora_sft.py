"""scripts/train_qlora_sft.py: smoke run + artefacts, adapter round trip, fail-fast inputs, CLI parsing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from engine.loading import load_base_model, peft_wrapping
from engine.registry import UnknownModel
from engine.sft_data import ConfigError, DatasetError, RunConfig, mix
from engine.training import parse_run_config as parse_args
from engine.training import train as main
from tests.conftest import TINY_FORMAT, build_tiny_base, tiny_rows, train_tiny_adapter, write_jsonl

ARTEFACTS = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "run_config.json",
    "prompt_format.json",
    "data_sha256.json",
    "system_info.json",
    "metrics.json",
    "train.log",
)


@pytest.fixture(scope="module")
def smoke_run(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("smoke")
    trainer = train_tiny_adapter(
        tiny_base_dir,
        root / "ft",
        root / "data",
        steps=12,
        eval_each_epoch=True,
        learning_rate=2e-2,
        lora_r=8,
        lora_alpha=16,
    )
    return root / "ft", trainer


def test_smoke_run_writes_every_artefact_and_learns(
    smoke_run: tuple[Path, object], tiny_base_dir: Path
) -> None:
    out, _ = smoke_run
    for name in ARTEFACTS:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert losses[-1] < losses[0]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert all(e["val_loss"] is not None for e in metrics["epochs"])
    assert metrics["best_val_loss"] == min(e["val_loss"] for e in metrics["epochs"])
    assert 0 < metrics["trainable_share"] < 1 and metrics["trainable_params"] > 0
    run = json.loads((out / "run_config.json").read_text())
    assert run["prompt_format"] == TINY_FORMAT.to_dict() and run["quantization"] == "none"
    assert run["config"]["lora_r"] == 8
    assert json.loads((out / "prompt_format.json").read_text()) == TINY_FORMAT.to_dict()
    assert len(json.loads((out / "data_sha256.json").read_text())) == 2
    assert {"torch", "transformers", "trl", "peft", "device", "ram_gb"} <= set(
        json.loads((out / "system_info.json").read_text())
    )
    assert (
        Path(json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"])
        == tiny_base_dir
    )


def test_adapter_on_base_reproduces_trained_logits(
    smoke_run: tuple[Path, object], tiny_base_dir: Path
) -> None:
    from peft import PeftModel

    out, trainer = smoke_run
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    trained = trainer.model.eval()
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
        with peft_wrapping():
            reloaded = PeftModel.from_pretrained(load_base_model(tiny_base_dir, quantize="none"), out).eval()
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(expected, got, atol=1e-5)
    with torch.no_grad():  # and the adapter changed the model
        assert not torch.allclose(load_base_model(tiny_base_dir, quantize="none")(input_ids=ids).logits, got)


def _cfg(tmp_path: Path, base: Path, train: Path, **kw: object) -> RunConfig:
    return RunConfig(
        model=str(base),
        dataset=[str(train)],
        eval_dataset=None,
        output_dir=str(tmp_path / "out"),
        quantization="none",
        max_steps=1,
        **kw,
    )


def test_missing_messages_fails_naming_the_line(tmp_path: Path, tiny_base_dir: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [tiny_rows()[0], {"prompt": "hi"}])
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: missing 'messages'"):
        main(_cfg(tmp_path, tiny_base_dir, bad))
    assert not (tmp_path / "out").exists()  # failed before writing anything


def test_assistant_turn_not_json_fails_naming_the_line(tmp_path: Path, tiny_base_dir: Path) -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    rows = [{"messages": [*msgs, {"role": "assistant", "content": "APPROVE it"}]}]
    with pytest.raises(DatasetError, match=r":1: assistant turn is not valid JSON"):
        main(_cfg(tmp_path, tiny_base_dir, write_jsonl(tmp_path / "x.jsonl", rows)))
    rows = [{"messages": [*msgs, {"role": "assistant", "content": '{"decision": "MAYBE"}'}]}]
    with pytest.raises(DatasetError, match=r":1: assistant turn is not a valid answer: decision"):
        main(_cfg(tmp_path, tiny_base_dir, write_jsonl(tmp_path / "y.jsonl", rows)))


def test_unknown_model_fails_naming_it(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "t.jsonl", tiny_rows()[:1])
    with pytest.raises(UnknownModel, match="no-such-model"):
        main(_cfg(tmp_path, Path("no-such-model"), train))


def test_cli_unknown_model_exits_with_its_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.train_qlora_sft import main as cli_main

    assert cli_main(["--model", "no-such-model", "--output_dir", str(tmp_path / "o")]) == 1
    assert "error: unknown model 'no-such-model'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_and_yaml_parsing(tmp_path: Path) -> None:
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("model: default-base\nlora_r: 64\nlearning_rate: 0.001\nprompt_policy: titles\n")
    cfg = parse_args(
        [
            "--config",
            str(yaml_path),
            "--dataset",
            "a.jsonl",
            "--dataset",
            "b.jsonl",
            "--mix_weights",
            "1.0",
            "3.0",
            "--lora_r",
            "32",
        ]
    )
    assert cfg.dataset == ["a.jsonl", "b.jsonl"] and cfg.mix_weights == [1.0, 3.0]
    assert cfg.lora_r == 32 and cfg.learning_rate == 0.001 and cfg.prompt_policy == "titles"
    assert RunConfig().lora_r == 16 and RunConfig().lora_alpha == 32 and RunConfig().quantization == "nf4"


def test_mix_weights() -> None:
    a = [{"prompt": [{"role": "user", "content": str(i)}], "completion": []} for i in range(10)]
    b = [{"prompt": [{"role": "user", "content": f"b{i}"}], "completion": []} for i in range(4)]
    mixed = mix([a, b], [1.0, 2.5], seed=0)
    assert len(mixed) == 10 + 10
    assert sum(1 for e in mixed if e["prompt"][0]["content"].startswith("b")) == 10
    with pytest.raises(ConfigError):
        mix([a, b], [1.0], seed=0)


def test_nf4_qlora_runs_or_falls_back(tiny_base_dir: Path, tmp_path: Path) -> None:
    """NF4 4-bit base (bitsandbytes on CPU) trains; if the backend fails, plain LoRA with a warning."""
    train_tiny_adapter(tiny_base_dir, tmp_path / "ft", tmp_path / "data", steps=2, quantization="nf4")
    run = json.loads((tmp_path / "ft" / "run_config.json").read_text())
    assert run["quantization"] in ("nf4", "none")
    assert (tmp_path / "ft" / "adapter_model.safetensors").is_file()


def test_nf4_training_on_cpu_after_the_probe(tmp_path: Path) -> None:
    """The NF4 probe forward runs in train mode: an eval-mode forward on a CPU with AVX512-BF16 makes
    bitsandbytes repack 4-bit weights for inference only, and training on a model whose layers have
    a bias (Qwen2's q/k/v) then failed ("a view of a leaf Variable ... in-place operation")."""
    base = build_tiny_base(tmp_path / "base", hidden_size=64, intermediate_size=128)
    train_tiny_adapter(base, tmp_path / "ft", tmp_path / "data", steps=2, quantization="nf4")
    run = json.loads((tmp_path / "ft" / "run_config.json").read_text())
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert run["quantization"] == "nf4"
    assert math.isfinite(metrics["train_loss"])


def test_cli_leaked_pool_exits_1_naming_the_row(
    tmp_path: Path, tiny_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from scripts.train_qlora_sft import main as cli_main

    rows = tiny_rows()
    frozen_row = json.loads(json.dumps(rows[2]))  # the pool's 3rd case under other ids and message
    frozen_row["id"] = frozen_row["input"]["case_id"] = "C-EV-3"
    frozen_row["input"]["customer"]["id"], frozen_row["input"]["order"]["id"] = "U-EV", "O-EV"
    frozen_row["input"]["message"] = "Worded otherwise."
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    frozen = write_jsonl(tmp_path / "frozen.jsonl", [frozen_row])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        code = cli_main(["--model", str(tiny_base_dir), "--dataset", str(pool), "--eval_dataset", str(pool),
                         "--frozen_sets", str(frozen), "--output_dir", str(tmp_path / "out"),
                         "--quantization", "none"])
    finally:
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert code == 1 and "error: 1 training row(s) match a frozen evaluation set" in err
    assert f"{pool}:3 (C-000003) ~ {frozen}:1 (C-EV-3) by fields key" in err
    assert not (tmp_path / "out").exists()


def test_frozen_sets_flag_and_yaml(tmp_path: Path) -> None:
    assert parse_args(["--frozen_sets", "none"]).frozen_sets == ["none"]
    assert parse_args(["--frozen_sets", "a.jsonl", "b.jsonl"]).frozen_sets == ["a.jsonl", "b.jsonl"]
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("frozen_sets: []\n")
    assert parse_args(["--config", str(yaml_path)]).frozen_sets == []
    assert parse_args([]).frozen_sets == ["data/generated/eval.jsonl", "data/generated/stress.jsonl"]


def test_numbers_out_of_range_are_refused_naming_each_field(tmp_path: Path, tiny_base_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Before anything is read or written; a CLI run prints them in one line (TRL, PEFT and torch
    raised them deep inside, as tracebacks, when the run had loaded everything)."""
    from scripts.train_qlora_sft import main as cli_main

    train = write_jsonl(tmp_path / "t.jsonl", tiny_rows()[:1])
    for bad, said in [({"learning_rate": -1.0}, "learning_rate: -1.0; must be > 0 and <= 1"),
                      ({"learning_rate": math.nan}, "learning_rate: nan; must be > 0 and <= 1"),
                      ({"lora_r": 0}, "lora_r: 0; must be from 1 to 1024"),
                      ({"per_device_train_batch_size": 0}, "per_device_train_batch_size: 0; must be from 1"),
                      ({"max_length": 0}, "max_length: 0; must be from 1 to 1048576"),
                      ({"lora_dropout": 1.0}, "lora_dropout: 1.0; must be >= 0 and < 1")]:
        with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
            main(_cfg(tmp_path, tiny_base_dir, train, **bad))
    with pytest.raises(ConfigError, match="lora_r: 0.*; logging_steps: 0"):  # every one, in one message
        main(_cfg(tmp_path, tiny_base_dir, train, lora_r=0, logging_steps=0))
    assert not (tmp_path / "out").exists()
    argv = ["--model", str(tiny_base_dir), "--dataset", str(train), "--output_dir", str(tmp_path / "o")]
    assert cli_main([*argv, "--learning_rate", "-1"]) == 1
    assert capsys.readouterr().err.strip().endswith("error: learning_rate: -1.0; must be > 0 and <= 1")
    assert cli_main([*argv[:-1], "/proc/no-such-place", "--max_steps", "1"]) == 1
    assert "error: output_dir: cannot write to /proc/no-such-place" in capsys.readouterr().err
