"""Training one LoRA adapter: :func:`train` (build model, load data, run TRL's SFTTrainer, write
artefacts) and :func:`parse_run_config` (a :class:`RunConfig` from command-line flags / a YAML file).

Callers are thin: scripts/train_qlora_sft.py (the command line) and engine.train_job (the
console's retraining job, which passes a progress callback). Every decision lives here or in
:mod:`engine.sft_data` (the configuration and the data, re-exported below): the quantisation /
LoRA / precision picks and the run artefacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from engine.build import seed_everything
from engine.loading import dtype_name, load_base_model, load_tokenizer, pick_dtype
from engine.registry import PROMPT_FORMAT_FILE, REPO_ROOT, ModelSpec, resolve_model
from engine.sft_data import (
    ConfigError,
    DatasetError,
    RunConfig,
    TrainingPoolLeak,
    check_frozen_sets,
    load_examples,
    mix,
    oversample_chains,
    row_to_example,
    rule_chain,
)
from policies.prompt import PromptFormat

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from engine.decision_loss import DecisionWeightedSFTTrainer

__all__ = [
    "LOG_FORMAT", "ConfigError", "DatasetError", "RunConfig", "TrainingPoolLeak", "check_frozen_sets",
    "epoch_metrics", "load_examples",
    "load_model_for_training", "lora_config", "merge_repeated_flags", "mix", "oversample_chains",
    "parse_run_config", "portable_base_path", "precision_flags", "row_to_example", "rule_chain",
    "sft_config", "sha256_of", "system_info", "train", "trainable_params", "write_artefacts",
]

log = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # console and train.log
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


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def precision_flags(precision: str) -> dict[str, bool]:
    """bf16 -> fp16 -> fp32: SFTConfig's mixed-precision flags for ``precision`` (auto: pick_dtype)."""
    name = dtype_name(pick_dtype()) if precision == "auto" else precision
    return {"bf16": name == "bf16", "fp16": name == "fp16"}


def lora_config(cfg: RunConfig) -> Any:
    """The LoRA adapter: rank, alpha, dropout, all linear layers (or the listed ones), embeddings optional."""
    from peft import LoraConfig

    targets: str | list[str] = cfg.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=["embed_tokens"] if cfg.train_embeddings else None,
        ensure_weight_tying=cfg.train_embeddings,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_model_for_training(spec: ModelSpec, cfg: RunConfig) -> tuple[Any, str]:
    """Open the base for LoRA training. NF4 4-bit when asked and it works (a forward pass is tried);
    otherwise a logged warning and plain weights. When ``spec`` carries an adapter (``--model``
    an adapter dir), that adapter is loaded trainable and training continues it.
    Out: (model, the quantisation used)."""
    model = load_base_model(spec, quantize=cfg.quantization, dtype=cfg.precision)
    if model.policyops_quantize == "nf4":
        # Probe in train mode: on a CPU, a 4-bit layer's first eval-mode forward repacks its weights
        # for inference only (bitsandbytes 0.50), and training on them then fails on biased layers.
        model.train()
        try:
            with torch.no_grad():
                model(input_ids=torch.tensor([[0, 1]], device=model.device))
        except Exception as exc:  # noqa: BLE001 - any 4-bit backend failure
            log.warning(
                "NF4 forward pass failed (%s: %s); training plain LoRA on unquantised weights",
                type(exc).__name__,
                exc,
            )
            model = load_base_model(spec, quantize="none", dtype=cfg.precision)
    model.config.use_cache = False
    quantization = model.policyops_quantize
    if spec.adapters:
        from peft import PeftModel

        name, adapter_dir = next(iter(spec.adapters.items()))
        log.info("continuing adapter %s from %s", name, adapter_dir)
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    return model, quantization


def sft_config(cfg: RunConfig, has_eval: bool) -> Any:
    """TRL SFTConfig from the run config: prompt-completion loss, eval + best checkpoint each epoch."""
    from trl import SFTConfig

    per_epoch = has_eval and cfg.eval_each_epoch
    return SFTConfig(
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        completion_only_loss=True,
        assistant_only_loss=False,  # prompt-completion: loss on the answer only
        gradient_checkpointing=False,
        packing=False,
        eval_strategy="epoch" if per_epoch else "no",
        save_strategy="epoch" if per_epoch else "no",
        load_best_model_at_end=per_epoch and cfg.select_best_by_val_loss,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        save_total_limit=2,
        save_only_model=True,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        report_to="none",
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        dataset_num_proc=None,
        **precision_flags(cfg.precision),
    )


def system_info() -> dict[str, Any]:
    """Versions, device and memory of the machine the run used."""
    import peft
    import psutil
    import transformers
    import trl

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "cpu_count": psutil.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import bitsandbytes

        info["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # noqa: BLE001 - optional
        info["bitsandbytes"] = None
    return info


def epoch_metrics(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch train loss (mean of the logged steps), val loss and token accuracy from the trainer log."""
    epochs: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        e = max(1, math.ceil(entry["epoch"] - 1e-9))
        row = epochs.setdefault(e, {"epoch": e, "_train": [], "_acc": []})
        if "loss" in entry:
            row["_train"].append(entry["loss"])
        if "mean_token_accuracy" in entry and "eval_loss" not in entry:
            row["_acc"].append(entry["mean_token_accuracy"])
        if "eval_loss" in entry:
            row["val_loss"] = entry["eval_loss"]
            row["val_token_accuracy"] = entry.get("eval_mean_token_accuracy")
    out = []
    for e in sorted(epochs):
        row = epochs[e]
        train, acc = row.pop("_train"), row.pop("_acc")
        row["train_loss"] = sum(train) / len(train) if train else None
        row["train_token_accuracy"] = sum(acc) / len(acc) if acc else None
        out.append(row)
    return out


def portable_base_path(base: str) -> str:
    """A base inside the repo is recorded relative to the repo root (a committed adapter stays valid)."""
    try:
        return str(Path(base).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return base


def write_artefacts(
    out_dir: str | Path,
    cfg: RunConfig,
    spec: ModelSpec,
    fmt: PromptFormat,
    quantization: str,
    metrics: dict[str, Any],
) -> None:
    """Write run_config.json, prompt_format.json, data hashes, system info and metrics.json to ``out_dir``,
    and make adapter_config.json point at the base by a repo-relative path where it can."""
    out = Path(out_dir)
    files = [*cfg.dataset, *([cfg.eval_dataset] if cfg.eval_dataset else [])]
    run = {
        "config": asdict(cfg),
        "base_model": portable_base_path(spec.base),
        "model_spec": spec.to_dict(),
        "prompt_format": fmt.to_dict(),
        "quantization": quantization,
        "precision": {k: v for k, v in precision_flags(cfg.precision).items() if v} or "fp32",
    }
    (out / "run_config.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    (out / PROMPT_FORMAT_FILE).write_text(json.dumps(fmt.to_dict(), indent=2), encoding="utf-8")
    hashes = {f: sha256_of(f) for f in files}
    (out / "data_sha256.json").write_text(json.dumps(hashes, indent=2), encoding="utf-8")
    (out / "system_info.json").write_text(json.dumps(system_info(), indent=2), encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    adapter_cfg = out / "adapter_config.json"
    if adapter_cfg.is_file():
        data = json.loads(adapter_cfg.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = portable_base_path(spec.base)
        adapter_cfg.write_text(json.dumps(data, indent=2), encoding="utf-8")


def trainable_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


@contextmanager
def _train_log(output_dir: str) -> Iterator[None]:
    """While it is open, INFO records of every logger reaching the root go to OUTPUT_DIR/train.log too
    (the run's log artefact); the root logger's handlers and level are as before afterwards."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(output_dir) / "train.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def train(cfg: RunConfig, callbacks: Sequence[TrainerCallback] = ()) -> DecisionWeightedSFTTrainer:
    """Train one LoRA adapter as ``cfg`` says and write it with its artefacts to ``cfg.output_dir``.

    In: the run config, and trainer callbacks (``transformers.TrainerCallback`` instances, e.g. a
    progress reporter) handed to the SFTTrainer next to its default ones. Out: the trainer, whose
    ``model`` is the trained model and ``state`` the log history. The output dir receives the adapter,
    the tokenizer, run_config.json, prompt_format.json, data_sha256.json, system_info.json,
    metrics.json and train.log (INFO records logged during the run).

    Errors, all before any file is written: :class:`~engine.registry.UnknownModel` (``cfg.model``),
    :class:`DatasetError` (a missing, empty or bad dataset file, naming ``path:line``),
    :class:`ConfigError` (mix weights that do not fit the datasets, an unreadable frozen set),
    :class:`TrainingPoolLeak` (a training row is a case of a frozen set, ``cfg.frozen_sets``, by its
    deciding fields or its prompt in the model's format; it names the rows). Model loading and
    training errors (out of memory, a broken model dir) propagate as raised by torch / transformers.
    """
    from datasets import Dataset

    from engine.decision_loss import DecisionWeightedSFTTrainer

    started = time.time()
    spec = resolve_model(cfg.model)  # fail fast on an unknown model, before any file is written
    fmt = cfg.prompt_format(spec)
    train_sets = [load_examples(path, fmt) for path in cfg.dataset]
    leak_check = check_frozen_sets(cfg.dataset, fmt, cfg.frozen_sets)  # before the model loads
    train_examples = mix(train_sets, cfg.mix_weights, cfg.seed)[: cfg.max_train_examples]
    eval_examples = (
        load_examples(cfg.eval_dataset, fmt)[: cfg.max_eval_examples] if cfg.eval_dataset else None
    )
    with _train_log(cfg.output_dir):
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
        if leak_check["status"] == "checked":
            log.info(
                "no training row matches a frozen set (%d rows checked against %s)",
                leak_check["rows_checked"],
                ", ".join(leak_check["frozen_sets"]),
            )
        else:
            log.warning(
                "training rows NOT checked against the frozen evaluation sets (frozen_sets %s: %s)",
                cfg.frozen_sets,
                leak_check["status"],
            )

        tokenizer = load_tokenizer(spec.base)
        tokenizer.padding_side = "right"  # training pads on the right; generation (load_tokenizer): left
        model, quantization = load_model_for_training(spec, cfg)
        trainer = DecisionWeightedSFTTrainer(
            model=model,
            args=sft_config(cfg, has_eval=eval_examples is not None),
            train_dataset=Dataset.from_list(train_examples),
            eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
            processing_class=tokenizer,
            peft_config=None if spec.adapters else lora_config(cfg),  # an adapter dir: continue it
            callbacks=list(callbacks),
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
            "leak_check": leak_check,
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
