"""Training one LoRA adapter: :func:`train` (build model, load data, run TRL's SFTTrainer — or, for
``method: dpo``, :func:`engine.dpo.train_dpo` — write artefacts) and :func:`parse_run_config` (a
:class:`~engine.sft_data.RunConfig` from command-line flags / a YAML file).

Callers are thin: scripts/train_qlora_sft.py (the command line) and engine.train_job (the
console's retraining job, which passes a progress callback). The configuration and the data are
:mod:`engine.sft_data`'s; what SFT and DPO share (the model to train, LoRA, precision, artefacts) is
:mod:`engine.train_setup`'s.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from engine.build import seed_everything
from engine.registry import resolve_model
from engine.sft_data import RunConfig, check_frozen_sets, load_examples, mix
from engine.train_setup import (
    build_trainer,
    finish_run,
    log_effective_batch,
    log_leak_check,
    train_log,
    trainable_params,
    trainer_args,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from engine.decision_loss import DecisionWeightedSFTTrainer


log = logging.getLogger(__name__)
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


def parse_run_config(argv: Sequence[str] | None = None) -> RunConfig:
    """A :class:`RunConfig` from train_qlora_sft flags (``sys.argv[1:]`` when None): every field is a
    ``--flag``; ``--config run.yaml`` sets defaults that the flags override; ``--dataset`` and
    ``--mix_weights`` may repeat. Bad flags exit as argparse does (SystemExit 2 with usage); a YAML
    file that is not a mapping raises ValueError."""
    from trl import TrlParser

    parser = TrlParser(dataclass_types=[RunConfig])
    (cfg,) = parser.parse_args_and_config(merge_repeated_flags(sys.argv[1:] if argv is None else argv))
    return cfg


def sft_config(cfg: RunConfig, has_eval: bool) -> Any:
    """TRL SFTConfig from the run config: prompt-completion loss, eval + best checkpoint each epoch."""
    from trl import SFTConfig

    per_epoch = has_eval and cfg.eval_each_epoch
    return SFTConfig(
        **trainer_args(cfg),
        completion_only_loss=True,
        assistant_only_loss=False,  # prompt-completion: loss on the answer only
        packing=False,
        eval_strategy="epoch" if per_epoch else "no",
        save_strategy="epoch" if per_epoch else "no",
        load_best_model_at_end=per_epoch and cfg.select_best_by_val_loss,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        save_only_model=True,
        dataset_num_proc=cfg.dataset_num_proc,
    )


def train(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> DecisionWeightedSFTTrainer:
    """Train one LoRA adapter as ``cfg`` says and write it with its artefacts to ``cfg.output_dir``.

    In: the run config, and trainer callbacks (``transformers.TrainerCallback`` instances, e.g. a
    progress reporter) handed to the SFTTrainer next to its default ones. Out: the trainer, whose
    ``model`` is the trained model and ``state`` the log history. The output dir receives the adapter,
    the tokenizer, run_config.json, prompt_format.json, data_sha256.json, system_info.json,
    metrics.json and train.log (INFO records logged during the run).

    Errors, all before any file is written: :class:`~engine.registry.UnknownModel` (``cfg.model``),
    :class:`DatasetError` (a missing, empty or bad dataset file, naming ``path:line``),
    :class:`ConfigError` (a number out of its range, naming the field; mix weights that do not fit the
    datasets, an unreadable frozen set),
    :class:`TrainingPoolLeak` (a training row is a case of a frozen set, ``cfg.frozen_sets``, by its
    deciding fields or its prompt in the model's format; it names the rows). Model loading and
    training errors (out of memory, a broken model dir) propagate as raised by torch / transformers.
    """
    cfg.check()  # numbers out of range, before anything is read or written
    if cfg.method == "dpo":
        from engine.dpo import train_dpo

        return train_dpo(cfg, callbacks)

    started = time.time()
    spec = resolve_model(cfg.model)  # fail fast on an unknown model, before any file is written
    fmt = cfg.prompt_format(spec)
    train_sets = [load_examples(path, fmt) for path in cfg.dataset]
    leak_check = check_frozen_sets(cfg.dataset, fmt, cfg.frozen_sets)  # before the model loads
    train_examples = mix(train_sets, cfg.mix_weights, cfg.seed)[: cfg.max_train_examples]
    eval_examples = (
        load_examples(cfg.eval_dataset, fmt)[: cfg.max_eval_examples] if cfg.eval_dataset else None
    )
    # TRL's import costs seconds on a small CPU: only once the inputs are known to be good, so a
    # mistyped model or dataset is refused at once.
    from engine.decision_loss import DecisionWeightedSFTTrainer

    with train_log(cfg.output_dir):
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
        log_leak_check(leak_check, cfg.frozen_sets)

        trainer, tokenizer, quantization = build_trainer(
            DecisionWeightedSFTTrainer, spec, cfg, sft_config(cfg, has_eval=eval_examples is not None),
            train_examples, eval_examples, callbacks,
            began=started, decision_loss_weight=cfg.decision_loss_weight, decision_tokens=cfg.decision_tokens,
        )
        trainable, total = trainable_params(trainer.model)
        log.info(
            "trainable params %d of %d (%.2f%%), quantization %s",
            trainable,
            total,
            100 * trainable / total,
            quantization,
        )
        log_effective_batch(trainer.args)
        result = trainer.train()
        metrics = finish_run(trainer, tokenizer, cfg, spec, fmt, quantization, result, started,
                             (trainable, total), (len(train_examples), len(eval_examples or [])),
                             {"best_val_loss": trainer.state.best_metric,
                              "best_checkpoint": trainer.state.best_model_checkpoint,
                              "leak_check": leak_check})
        log.info(
            "saved adapter to %s; train loss %.4f, best val loss %s, %.0f s",
            cfg.output_dir,
            result.training_loss,
            trainer.state.best_metric,
            metrics["runtime_s"],
        )
    return trainer
