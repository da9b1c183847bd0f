"""Library side of QLoRA SFT (scripts/train_qlora_sft.py): configuration, data, model, artefacts.

The script reads as a straight line; every decision lives here: :class:`RunConfig` (every
hyper-parameter), dataset loading / validation / mixing into TRL's conversational
prompt-completion format (so the loss falls on the assistant turn only, for our template and
Qwen's alike), the quantisation / LoRA / precision picks, and the run artefacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from engine.loading import dtype_name, load_base_model, pick_dtype
from engine.registry import PROMPT_FORMAT_FILE, REPO_ROOT, ModelSpec
from policies import InvalidInput, parse_answer, parse_case
from policies.prompt import PromptFormat, answer_json, build_messages

log = logging.getLogger(__name__)

Example = dict[str, list[dict[str, str]]]  # {"prompt": [system, user], "completion": [assistant]}


@dataclass
class RunConfig:
    """Every knob of one SFT run; parsed from the command line and/or ``--config run.yaml``."""

    model: str = field(default="default-base", metadata={"help": "registry name, model/adapter dir or HF id"})
    dataset: list[str] = field(
        default_factory=lambda: ["data/generated/train.jsonl"],
        metadata={"help": "training JSONL files (generator rows or `messages` rows)"},
    )
    mix_weights: list[float] | None = field(default=None, metadata={"help": "one weight per --dataset file"})
    eval_dataset: str | None = field(
        default="data/generated/validation.jsonl", metadata={"help": "validation JSONL; none: no eval"}
    )
    output_dir: str = field(default="runs/sft", metadata={"help": "adapter + artefacts go here"})
    # prompt format (None: the model's own, from the registry / prompt_format.json)
    prompt_policy: Literal["full", "titles"] | None = None
    prompt_instructions: Literal["full", "short"] | None = None
    prompt_max_message_chars: int | None = None
    prompt_case: Literal["json", "fields"] | None = None
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = field(default="all-linear", metadata={"help": "all-linear or comma list"})
    decision_loss_weight: float = field(
        default=0.0, metadata={"help": "extra loss weight on the first decision_tokens answer tokens"}
    )
    decision_tokens: int = 16  # answer tokens that hold {"decision":"..."
    train_embeddings: bool = field(
        default=False, metadata={"help": "also train embed_tokens (+ tied lm_head)"}
    )
    # quantisation / precision
    quantization: Literal["nf4", "none"] = field(
        default="nf4", metadata={"help": "NF4 4-bit double-quant base"}
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03  # share of steps warming up (SFTConfig.warmup_steps as a ratio)
    weight_decay: float = 0.0
    num_train_epochs: float = 3.0
    max_steps: int = -1  # >0 overrides epochs (smoke tests)
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 1024  # tokens; longer examples are cut (logged)
    max_train_examples: int | None = None  # cap after mixing (quick runs)
    max_eval_examples: int | None = None
    seed: int = 42
    logging_steps: int = 10
    eval_each_epoch: bool = True
    select_best_by_val_loss: bool = True
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (None: torch's choice)"}
    )

    def prompt_format(self, spec: ModelSpec) -> PromptFormat:
        """The run's prompt format: the model's own, with any option given on the command line."""
        fmt = spec.prompt_format.to_dict()
        for key in ("policy", "instructions", "max_message_chars", "case"):
            value = getattr(self, f"prompt_{key}")
            if value is not None:
                fmt[key] = value
        return PromptFormat.from_dict(fmt)


class DatasetError(ValueError):
    """A dataset line is unusable; the message names the file and line (and field)."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


class ConfigError(ValueError):
    """The run configuration is inconsistent (e.g. mix weights that do not match the datasets)."""


def _check_assistant(content: Any, path: str | Path, line: int) -> str:
    """Validate an assistant turn as a policies.Answer; out: its canonical JSON."""
    if not isinstance(content, str):
        raise DatasetError(path, line, "assistant turn: content must be a string")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            path, line, f"assistant turn is not valid JSON ({exc.msg} at char {exc.pos})"
        ) from None
    try:
        return answer_json(parse_answer(data))
    except InvalidInput as exc:
        raise DatasetError(path, line, f"assistant turn is not a valid answer: {exc}") from None


def row_to_example(row: Any, fmt: PromptFormat, path: str | Path = "<row>", line: int = 0) -> Example:
    """One dataset row -> a prompt-completion example.

    Rows: the generator's ``{"input": case, "output": answer}`` (rendered with
    :func:`policies.prompt.build_messages` in ``fmt``) or ``{"messages": [..., assistant]}`` (kept
    as given). Raises :class:`DatasetError` naming ``path:line`` for anything else.
    """
    if not isinstance(row, dict):
        raise DatasetError(path, line, f"a row must be a JSON object, got {type(row).__name__}")
    if "input" in row:
        try:
            case = parse_case(row["input"])
        except InvalidInput as exc:
            raise DatasetError(path, line, f"input is not a valid case: {exc}") from None
        if "output" not in row:
            raise DatasetError(path, line, "missing 'output' (the expected answer)")
        try:
            answer = parse_answer(row["output"])
        except InvalidInput as exc:
            raise DatasetError(path, line, f"output is not a valid answer: {exc}") from None
        messages = build_messages(case, fmt, answer)
    elif "messages" in row:
        messages = row["messages"]
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or not all(isinstance(m, dict) for m in messages)
        ):
            raise DatasetError(path, line, "'messages' must be a list of at least two turns")
        if messages[-1].get("role") != "assistant":
            raise DatasetError(path, line, "the last turn of 'messages' must be the assistant's answer")
        for i, turn in enumerate(messages[:-1]):
            if turn.get("role") not in ("system", "user") or not isinstance(turn.get("content"), str):
                raise DatasetError(
                    path, line, f"messages[{i}]: expected a system or user turn with text content"
                )
        content = _check_assistant(messages[-1].get("content"), path, line)
        messages = [*messages[:-1], {"role": "assistant", "content": content}]
    else:
        raise DatasetError(path, line, "missing 'messages' (conversational row) or 'input' (generator row)")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    return {"prompt": prompt, "completion": [messages[-1]]}


def load_examples(path: str | Path, fmt: PromptFormat) -> list[Example]:
    """Read a JSONL dataset into prompt-completion examples; fails fast on the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, 0, "no such dataset file")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, line_no, f"not valid JSON ({exc.msg})") from None
            examples.append(row_to_example(row, fmt, path, line_no))
    if not examples:
        raise DatasetError(path, 0, "the dataset is empty")
    return examples


def mix(datasets: list[list[Example]], weights: list[float] | None, seed: int) -> list[Example]:
    """Mix datasets: weight w takes round(w * n) examples of a file of n (whole copies, then a
    seeded sample for the fraction), then shuffles. Raises :class:`ConfigError` on bad weights."""
    weights = weights or [1.0] * len(datasets)
    if len(weights) != len(datasets):
        raise ConfigError(f"{len(weights)} mix weights for {len(datasets)} datasets")
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ConfigError(f"mix weights must be finite and >= 0, got {weights}")
    rng = random.Random(seed)
    out: list[Example] = []
    for examples, w in zip(datasets, weights, strict=True):
        whole, frac = divmod(w, 1.0)
        out.extend(examples * int(whole))
        out.extend(rng.sample(examples, round(frac * len(examples))))
    rng.shuffle(out)
    return out


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


def rule_chain(row: dict[str, Any]) -> str:
    """A generator row's deciding rule chain: its ``policy_refs`` joined by ``+`` (``NRC-3+LIM-1``)."""
    try:
        return "+".join(row["output"]["policy_refs"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"row {row.get('id', '?')!r} has no output.policy_refs (a generator row is needed)"
        ) from exc


def oversample_chains(
    rows: list[dict[str, Any]], weak: set[str], n_rest: int, seed: int
) -> list[dict[str, Any]]:
    """Every row whose rule chain is in ``weak`` plus a seeded sample of ``n_rest`` other rows, shuffled.

    Rebalancing toward the chains a validation run showed weak (the default-ft recipe's stage 3).
    Raises :class:`ConfigError` naming a weak chain that has no row."""
    chains = [rule_chain(r) for r in rows]
    missing = weak - set(chains)
    if missing:
        raise ConfigError(f"weak chains with no row in the dataset: {', '.join(sorted(missing))}")
    rng = random.Random(seed)
    picked = [r for r, c in zip(rows, chains, strict=True) if c in weak]
    rest = [r for r, c in zip(rows, chains, strict=True) if c not in weak]
    rng.shuffle(rest)
    out = picked + rest[:n_rest]
    rng.shuffle(out)
    return out
