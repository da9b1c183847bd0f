"""QLoRA SFT of a policy model on decided cases (and reviewer corrections).

# Real model (GPU), NF4 4-bit base, LoRA r=16 on all linear layers:
uv run python scripts/train_qlora_sft.py \
    --model qwen2.5-1.5b \
    --dataset data/generated/train.jsonl --eval_dataset data/generated/validation.jsonl \
    --output_dir runs/qwen2.5-1.5b-ft

# Same, mixing reviewer corrections (TRL `messages` rows) in at three times their weight:
uv run python scripts/train_qlora_sft.py --model qwen2.5-1.5b \
    --dataset data/generated/train.jsonl --dataset exports/corrections.jsonl --mix_weights 1.0 3.0 \
    --output_dir runs/qwen2.5-1.5b-ft-v2

# From a YAML file (command-line flags override it); the embedded default adapter:
uv run python scripts/train_qlora_sft.py --config configs/default-ft.yaml

Every hyper-parameter is a field of engine.training.RunConfig. The output dir receives the
adapter, the tokenizer, run_config.json, prompt_format.json, data_sha256.json,
system_info.json, metrics.json and train.log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset
from trl import TrlParser

from engine.build import seed_everything
from engine.decision_loss import DecisionWeightedSFTTrainer
from engine.loading import load_tokenizer
from engine.registry import UnknownModel, resolve_model
from engine.training import (
    ConfigError,
    DatasetError,
    RunConfig,
    epoch_metrics,
    load_examples,
    load_model_for_training,
    lora_config,
    mix,
    sft_config,
    trainable_params,
    write_artefacts,
)

log = logging.getLogger("train_qlora_sft")
_LIST_FLAGS = ("--dataset", "--mix_weights")


def merge_repeated_flags(argv: Sequence[str]) -> list[str]:
    """``--dataset a --dataset b`` -> ``--dataset a b`` (argparse keeps only the last otherwise)."""
    merged: dict[str, list[str]] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _LIST_FLAGS:
            values = merged.setdefault(argv[i], [])
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
        else:
            rest.append(argv[i])
            i += 1
    for flag, values in merged.items():
        rest += [flag, *values]
    return rest


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    parser = TrlParser(dataclass_types=[RunConfig])
    argv = merge_repeated_flags(sys.argv[1:] if argv is None else argv)
    (cfg,) = parser.parse_args_and_config(argv)
    return cfg


def setup_logging(output_dir: str) -> None:
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(), logging.FileHandler(Path(output_dir) / "train.log", mode="w")]
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def main(cfg: RunConfig) -> DecisionWeightedSFTTrainer:
    """Train one adapter as ``cfg`` says; out: the trainer (its model is the trained one).

    Errors: UnknownModel, DatasetError, ConfigError (all before any training starts).
    """
    started = time.time()
    spec = resolve_model(cfg.model)  # fail fast on an unknown model, before any file is written
    fmt = cfg.prompt_format(spec)
    train_sets = [load_examples(path, fmt) for path in cfg.dataset]
    train_examples = mix(train_sets, cfg.mix_weights, cfg.seed)[: cfg.max_train_examples]
    eval_examples = (
        load_examples(cfg.eval_dataset, fmt)[: cfg.max_eval_examples] if cfg.eval_dataset else None
    )
    setup_logging(cfg.output_dir)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    log.info(
        "model %s (base %s), prompt format %s, %d train / %d eval examples",
        spec.name,
        spec.base,
        fmt.to_dict(),
        len(train_examples),
        len(eval_examples or []),
    )

    tokenizer = load_tokenizer(spec.base)
    tokenizer.padding_side = "right"  # training pads on the right; generation (load_tokenizer) on the left
    model, quantization = load_model_for_training(spec, cfg)
    trainer = DecisionWeightedSFTTrainer(
        model=model,
        args=sft_config(cfg, has_eval=eval_examples is not None),
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
        processing_class=tokenizer,
        peft_config=None if spec.adapters else lora_config(cfg),  # an adapter dir: continue it
        decision_loss_weight=cfg.decision_loss_weight,
        decision_tokens=cfg.decision_tokens,
    )
    trainable, total = trainable_params(trainer.model)
    log.info(
        "trainable params %d of %d (%.2f%%), quantization %s",
        trainable,
        total,
        100 * trainable / total,
        quantization,
    )
    result = trainer.train()

    trainer.save_model(cfg.output_dir)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(cfg.output_dir)
    metrics = {
        "epochs": epoch_metrics(trainer.state.log_history),
        "train_loss": result.training_loss,
        "best_val_loss": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "runtime_s": round(time.time() - started, 1),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples or []),
        "log_history": trainer.state.log_history,
    }
    write_artefacts(cfg.output_dir, cfg, spec, fmt, quantization, metrics)
    log.info(
        "saved adapter to %s; train loss %.4f, best val loss %s, %.0f s",
        cfg.output_dir,
        result.training_loss,
        trainer.state.best_metric,
        metrics["runtime_s"],
    )
    return trainer


if __name__ == "__main__":
    try:
        main(parse_args())
    except (UnknownModel, DatasetError, ConfigError) as exc:
        sys.exit(f"error: {exc}")
