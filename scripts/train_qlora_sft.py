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

# From a YAML file (command-line flags override it); the embedded default adapter, stage 1 of 4:
uv run python scripts/train_qlora_sft.py --config data/models/default-ft.yaml

# On several processes (configs/accelerate/: two CPU processes with gloo, DDP or FSDP + QLoRA on GPUs);
# every rank trains, rank 0 alone writes; the effective batch size is logged:
uv run accelerate launch --config_file configs/accelerate/cpu-2proc.yaml \
    scripts/train_qlora_sft.py --config data/models/default-ft.yaml --output_dir runs/ft-2proc

Every hyper-parameter is a field of engine.sft_data.RunConfig; the training itself is
engine.training.train. The output dir receives the adapter, the tokenizer, run_config.json,
prompt_format.json, data_sha256.json, system_info.json, metrics.json and train.log.
An unknown model, a bad dataset line, bad mix weights or training rows that match a frozen evaluation
set (``--frozen_sets``: the eval set, and the stress set when present) exit with status 1 and
``error: ...``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from engine.registry import UnknownModel
from engine.sft_data import ConfigError, DatasetError, TrainingPoolLeak
from engine.train_setup import LOG_FORMAT, end_processes
from engine.training import parse_run_config, train


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (``sys.argv[1:]`` when None), train; out: the exit status (0, or 1 after
    printing ``error: ...`` to stderr for an unknown model, a bad dataset, bad mix weights or a
    training pool that leaks a frozen set's cases)."""
    cfg = parse_run_config(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    try:
        train(cfg)
    except (UnknownModel, DatasetError, ConfigError, TrainingPoolLeak) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    end_processes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
