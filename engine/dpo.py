"""Corrections as preference data: DPO of a LoRA adapter on (prompt, chosen, rejected) pairs.

A reviewer's correction says two things: the corrected answer is right (SFT learns that) and the
model answer it replaced was worse (only a preference objective uses that). Rows:

- ``{"input": case, "chosen": answer, "rejected": answer}`` — a case and two answers, rendered at
  training time in the trained model's own prompt format (what the console's retraining writes);
- ``{"prompt": [system, user turns], "chosen": [assistant turn], "rejected": [assistant turn]}`` —
  TRL's conversational preference format (what the Export tab writes beside the SFT file).

:func:`train_dpo` is :func:`engine.training.train`'s DPO twin (TRL ``DPOTrainer``): same run config,
model loading, artefacts and callbacks. From a base it trains a fresh LoRA adapter and the reference
is the base (adapter disabled); from an adapter dir (``--model runs/ft-v1``) it continues that adapter
and the reference is a frozen copy of it (TRL adds it as adapter ``ref``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.sft_data import DatasetError, _check_assistant, read_rows
from policies import InvalidInput, parse_answer, parse_case
from policies.prompt import PromptFormat, answer_json, build_messages

Preference = dict[str, list[dict[str, str]]]  # {"prompt": turns, "chosen": [turn], "rejected": [turn]}


def _answer_turn(value: Any, what: str, path: str | Path, line: int) -> list[dict[str, str]]:
    """A generator-row answer (a dict) -> one assistant turn with the answer's canonical JSON."""
    try:
        answer = parse_answer(value)
    except InvalidInput as exc:
        raise DatasetError(path, line, f"{what} is not a valid answer: {exc}") from None
    return [{"role": "assistant", "content": answer_json(answer)}]


def _conversational_turn(value: Any, what: str, path: str | Path, line: int) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict) \
            or value[0].get("role") != "assistant":
        raise DatasetError(path, line, f"'{what}' must be a list of one assistant turn")
    return [{"role": "assistant", "content": _check_assistant(value[0].get("content"), path, line)}]


def preference_example(row: Any, fmt: PromptFormat, path: str | Path = "<row>", line: int = 0) -> Preference:
    """One preference row -> a TRL conversational preference example.

    Raises :class:`~engine.sft_data.DatasetError` naming ``path:line`` for a row that is neither shape,
    an invalid case or answer, or a pair whose chosen and rejected answers are the same.
    """
    if not isinstance(row, dict):
        raise DatasetError(path, line, f"a row must be a JSON object, got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if key not in row:
            raise DatasetError(path, line, f"missing '{key}' (a preference row needs chosen and rejected)")
    if "input" in row:
        try:
            case = parse_case(row["input"])
        except InvalidInput as exc:
            raise DatasetError(path, line, f"input is not a valid case: {exc}") from None
        prompt = build_messages(case, fmt)
        chosen = _answer_turn(row["chosen"], "chosen", path, line)
        rejected = _answer_turn(row["rejected"], "rejected", path, line)
    elif "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, list) or not prompt or not all(
            isinstance(t, dict) and t.get("role") in ("system", "user") and isinstance(t.get("content"), str)
            for t in prompt
        ):
            raise DatasetError(path, line, "'prompt' must be a list of system/user turns with text content")
        prompt = [{"role": t["role"], "content": t["content"]} for t in prompt]
        chosen = _conversational_turn(row["chosen"], "chosen", path, line)
        rejected = _conversational_turn(row["rejected"], "rejected", path, line)
    else:
        raise DatasetError(path, line, "missing 'input' (generator row) or 'prompt' (conversational row)")
    if chosen[0]["content"] == rejected[0]["content"]:
        raise DatasetError(path, line, "chosen and rejected are the same answer: nothing to prefer")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def load_preferences(path: str | Path, fmt: PromptFormat) -> list[Preference]:
    """Read a JSONL file of preference rows; fails fast on the first bad line (naming it)."""
    return read_rows(path, lambda row, p, line: preference_example(row, fmt, p, line),
                     "the file holds no preference rows")


def dpo_config(cfg: Any, has_eval: bool) -> Any:
    """TRL DPOConfig from the run config (the same schedule, batch and precision fields as SFT)."""
    from trl import DPOConfig

    from engine.train_setup import trainer_args

    return DPOConfig(
        **trainer_args(cfg),
        beta=cfg.dpo_beta,
        truncation_mode="keep_start",  # like SFT's max_length cut: the prompt and the answer's start stay
        eval_strategy="epoch" if has_eval and cfg.eval_each_epoch else "no",
        save_strategy="no",
    )


def train_dpo(cfg: Any, callbacks: Any = ()) -> Any:
    """DPO-train one LoRA adapter as ``cfg`` (a :class:`~engine.sft_data.RunConfig` with
    ``method="dpo"``) says; writes the adapter and the same artefacts as SFT to ``cfg.output_dir``.

    ``cfg.dataset`` files hold preference rows (mixed by ``cfg.mix_weights``); ``cfg.eval_dataset``,
    when it holds preference rows too, is evaluated each epoch. Out: the trainer. Errors as
    :func:`engine.training.train` (UnknownModel, DatasetError, ConfigError, TrainingPoolLeak), before
    any file is written.
    """
    import logging
    import time

    import torch
    from trl import DPOTrainer

    from engine.build import seed_everything
    from engine.loading import peft_wrapping
    from engine.registry import resolve_model
    from engine.sft_data import check_frozen_sets, mix
    from engine.train_setup import (
        build_trainer,
        finish_run,
        log_effective_batch,
        log_leak_check,
        train_log,
        trainable_params,
    )

    log = logging.getLogger(__name__)
    started = time.time()
    spec = resolve_model(cfg.model)
    fmt = cfg.prompt_format(spec)
    train_sets = [load_preferences(path, fmt) for path in cfg.dataset]
    leak_check = check_frozen_sets(cfg.dataset, fmt, cfg.frozen_sets)  # before the model loads
    train_examples = mix(train_sets, cfg.mix_weights, cfg.seed)[: cfg.max_train_examples]
    eval_examples = load_preferences(cfg.eval_dataset, fmt)[: cfg.max_eval_examples] \
        if cfg.eval_dataset else None
    with train_log(cfg.output_dir):
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        log.info("DPO: model %s (base %s), beta %s, %d pairs / %d eval pairs", spec.name, spec.base,
                 cfg.dpo_beta, len(train_examples), len(eval_examples or []))
        log_leak_check(leak_check, cfg.frozen_sets)
        trainer, tokenizer, quantization = build_trainer(
            DPOTrainer, spec, cfg, dpo_config(cfg, has_eval=eval_examples is not None),
            train_examples, eval_examples, callbacks, began=started,
        )
        trainable, total = trainable_params(trainer.model)
        log_effective_batch(trainer.args)
        with peft_wrapping():  # TRL's DPO step reads the same deprecated alias through PEFT
            result = trainer.train()
        if "ref" in getattr(trainer.model, "peft_config", {}):  # TRL's frozen reference copy: not saved
            trainer.model.delete_adapter("ref")
        metrics = finish_run(trainer, tokenizer, cfg, spec, fmt, quantization, result, started,
                             (trainable, total), (len(train_examples), len(eval_examples or [])),
                             {"method": "dpo", "leak_check": leak_check})
        log.info("saved DPO adapter to %s; train loss %.4f, %.0f s", cfg.output_dir, result.training_loss,
                 metrics["runtime_s"])
    return trainer
