"""SFT run configuration and data: :class:`RunConfig`, dataset rows -> examples, mixing, rebalancing.

The light half of training (no torch, no transformers here): every hyper-parameter of a run,
dataset loading / validation into TRL's conversational prompt-completion format (so the loss
falls on the assistant turn only, for our template and Qwen's alike), the check that no training
row is a frozen evaluation set's case (:func:`check_frozen_sets`), mixing datasets by weight,
and oversampling weak rule chains (scripts/rebalance_dataset.py). The trainer side, which
runs models, is :mod:`engine.training`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from engine.registry import PROMPT_KEYS, ModelSpec
from engine.types import DatasetError as DatasetError  # re-exported: the readers here raise it
from policies import InvalidInput, parse_answer, parse_case
from policies.leakage import (
    DEFAULT_FROZEN_SETS,
    FrozenSetError,
    find_leaks,
    frozen_keys,
    iter_jsonl,
    resolve_frozen_paths,
)
from policies.leakage import TrainingPoolLeak as TrainingPoolLeak  # re-exported: a data error of a run
from policies.prompt import PromptFormat, answer_json, build_messages

T = TypeVar("T")
Example = dict[str, list[dict[str, str]]]  # {"prompt": [system, user], "completion": [assistant]}


@dataclass
class RunConfig:
    """Every knob of one training run (SFT, or DPO on preference pairs); parsed from the command line
    and/or ``--config run.yaml``."""

    method: Literal["sft", "dpo"] = field(
        default="sft",
        metadata={"help": "sft: learn the answers; dpo: prefer chosen over rejected answers "
                          "(preference rows: input/chosen/rejected or prompt/chosen/rejected)"},
    )
    dpo_beta: float = field(
        default=0.1, metadata={"help": "DPO: how far from the reference model (KL weight)"}
    )
    model: str = field(default="default-base", metadata={"help": "registry name, model/adapter dir or HF id"})
    dataset: list[str] = field(
        default_factory=lambda: ["data/generated/train.jsonl"],
        metadata={"help": "training JSONL files (generator rows or `messages` rows)"},
    )
    mix_weights: list[float] | None = field(default=None, metadata={"help": "one weight per --dataset file"})
    eval_dataset: str | None = field(
        default="data/generated/validation.jsonl", metadata={"help": "validation JSONL; none: no eval"}
    )
    frozen_sets: list[str] = field(
        default_factory=lambda: list(DEFAULT_FROZEN_SETS),
        metadata={"help": "frozen evaluation sets no training row may match by deciding fields or prompt "
                          "(missing files skipped; [] in YAML or `none`: no check, with a warning)"},
    )
    output_dir: str = field(default="runs/sft", metadata={"help": "adapter + artefacts go here"})
    # prompt format (None: the model's own, from the registry / prompt_format.json)
    prompt_policy: Literal["full", "titles"] | None = None
    prompt_instructions: Literal["full", "short"] | None = None
    prompt_max_message_chars: int | None = None
    prompt_case: Literal["json", "fields"] | None = None
    prompt_policy_facts: bool | None = None  # the policy's numbers beside the case's (fields format)
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
    tf32: bool = field(
        default=False,
        metadata={"help": "on a GPU that has it, TF32 matrix products under fp32 weights (ignored on a CPU, "
                          "so one config trains anywhere)"},
    )
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
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in the backward pass: less memory, slower"}
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "a time budget: training stops after the step that reaches it, and the adapter is "
                          "saved as it stands (metrics.json: time_budget); None: no budget"},
    )
    budget_schedule: Literal["fit", "cut"] = field(
        default="fit",
        metadata={"help": "with max_train_minutes: 'fit' times the first steps and, when the planned steps "
                          "will not fit, ends the run and its learning-rate schedule (warm-up, decay to the "
                          "end) at the step that does; 'cut' keeps the planned schedule and stops wherever "
                          "the budget runs out"},
    )
    max_train_examples: int | None = None  # cap after mixing (quick runs)
    max_eval_examples: int | None = None
    seed: int = 42
    logging_steps: int = 10
    eval_each_epoch: bool = True
    select_best_by_val_loss: bool = True
    num_threads: int | None = field(
        default=None, metadata={"help": "torch CPU threads (None: torch's choice)"}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "processes that tokenize the dataset (None: this one)"}
    )

    def __post_init__(self) -> None:
        if self.eval_dataset is not None and self.eval_dataset.strip().lower() in ("", "none"):
            self.eval_dataset = None  # `--eval_dataset none` on the command line: no validation set

    def check(self) -> None:
        """Refuse numbers out of their range before any work: :class:`ConfigError` naming each field
        that is wrong (``field: value; must be ...``), in one message."""
        problems = [f"{name}: {getattr(self, name)!r}; must be {rule}"
                    for name, ok, rule in _bounds(self) if not ok]
        if problems:
            raise ConfigError("; ".join(problems))

    def prompt_format(self, spec: ModelSpec) -> PromptFormat:
        """The run's prompt format: the model's own, with any option given on the command line."""
        fmt = spec.prompt_format.to_dict()
        for key in PROMPT_KEYS:
            value = getattr(self, key)
            if value is not None:
                fmt[key.removeprefix("prompt_")] = value
        return PromptFormat.from_dict(fmt)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _bounds(cfg: RunConfig) -> list[tuple[str, bool, str]]:
    """(field, within its range, the range in words) for each number of a run config."""
    def optional(value: int | None, low: int) -> bool:
        return value is None or value >= low

    minutes = cfg.max_train_minutes

    return [
        ("learning_rate", _finite(cfg.learning_rate) and 0 < cfg.learning_rate <= 1, "> 0 and <= 1"),
        ("dpo_beta", _finite(cfg.dpo_beta) and cfg.dpo_beta > 0, "> 0"),
        ("lora_r", 1 <= cfg.lora_r <= 1024, "from 1 to 1024"),
        ("lora_alpha", _finite(cfg.lora_alpha) and cfg.lora_alpha > 0, "> 0"),
        ("lora_dropout", _finite(cfg.lora_dropout) and 0 <= cfg.lora_dropout < 1, ">= 0 and < 1"),
        ("decision_loss_weight", _finite(cfg.decision_loss_weight) and cfg.decision_loss_weight >= 0, ">= 0"),
        ("decision_tokens", 1 <= cfg.decision_tokens <= 512, "from 1 to 512"),
        ("warmup_ratio", _finite(cfg.warmup_ratio) and 0 <= cfg.warmup_ratio <= 1, "from 0 to 1"),
        ("weight_decay", _finite(cfg.weight_decay) and cfg.weight_decay >= 0, ">= 0"),
        ("num_train_epochs",
         _finite(cfg.num_train_epochs) and (cfg.num_train_epochs > 0 or cfg.max_steps > 0),
         "> 0 (unless max_steps is)"),
        ("max_steps", cfg.max_steps >= -1, "-1 (use the epochs) or more"),
        ("per_device_train_batch_size", 1 <= cfg.per_device_train_batch_size <= 4096, "from 1 to 4096"),
        ("per_device_eval_batch_size", 1 <= cfg.per_device_eval_batch_size <= 4096, "from 1 to 4096"),
        ("gradient_accumulation_steps", 1 <= cfg.gradient_accumulation_steps <= 4096, "from 1 to 4096"),
        ("max_length", 1 <= cfg.max_length <= 1_048_576, "from 1 to 1048576"),
        ("max_train_minutes", minutes is None or (_finite(minutes) and 0 < minutes <= 10_080),
         "> 0 and <= 10080 (or unset)"),
        ("budget_schedule", cfg.budget_schedule in ("fit", "cut"), "'fit' or 'cut'"),
        ("max_train_examples", optional(cfg.max_train_examples, 1), "1 or more (or unset)"),
        ("max_eval_examples", optional(cfg.max_eval_examples, 1), "1 or more (or unset)"),
        ("prompt_max_message_chars", optional(cfg.prompt_max_message_chars, 0), "0 or more (or unset)"),
        ("seed", 0 <= cfg.seed < 2**32, "from 0 to 4294967295"),
        ("logging_steps", cfg.logging_steps >= 1, "1 or more"),
        ("num_threads", optional(cfg.num_threads, 1), "1 or more (or unset)"),
        ("dataset_num_proc", optional(cfg.dataset_num_proc, 1), "1 or more (or unset)"),
    ]


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


def read_rows(path: str | Path, convert: Callable[[Any, Path, int], T], empty: str) -> list[T]:
    """Read a JSONL dataset, ``convert(row, path, line)`` each row; fails fast on the first bad line.

    Raises :class:`DatasetError` for a missing file, a line that is not JSON (naming it), whatever
    ``convert`` raises, and a file without rows (message ``empty``)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, 0, "no such dataset file")
    out = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(path, line_no, f"not valid JSON ({exc.msg})") from None
            out.append(convert(row, path, line_no))
    if not out:
        raise DatasetError(path, 0, empty)
    return out


def load_examples(path: str | Path, fmt: PromptFormat) -> list[Example]:
    """Read a JSONL dataset into prompt-completion examples; fails fast on the first bad line."""
    return read_rows(path, lambda row, p, line: row_to_example(row, fmt, p, line), "the dataset is empty")


def check_frozen_sets(
    datasets: Sequence[str | Path], fmt: PromptFormat, frozen_sets: Sequence[str]
) -> dict[str, Any]:
    """Check every row of ``datasets`` against the frozen sets, keyed in the trained model's ``fmt``.

    A row leaks when its deciding fields (:func:`policies.leakage.fields_key`) or its prompt in
    ``fmt`` are a frozen row's, ids and message aside. Frozen sets that do not exist are skipped
    (relative paths: the working dir, then the repo root); ``[]`` or ``["none"]`` checks nothing.
    Out: ``{"status": "checked" | "disabled" | "no frozen set found", "frozen_sets": files checked
    against, "rows_checked": n, "missing": the sets asked for that were not found}`` (a mistyped
    path among several is still checked against the others; the run warns naming it).
    Raises :class:`TrainingPoolLeak` naming the leaking rows (``path:line (id)``, the frozen row,
    the key) and :class:`ConfigError` for an unreadable frozen set. Call it after
    :func:`load_examples` has validated the files.
    """
    wanted = [p for p in frozen_sets if p and p.strip().lower() != "none"]
    if not wanted:
        return {"status": "disabled", "frozen_sets": [], "rows_checked": 0, "missing": []}
    missing = [p for p in wanted if not resolve_frozen_paths([p])]
    try:
        frozen = frozen_keys(wanted, fmt)
    except FrozenSetError as exc:
        raise ConfigError(str(exc)) from None
    if not frozen.paths:
        return {"status": "no frozen set found", "frozen_sets": [], "rows_checked": 0, "missing": missing}
    counted = [0]

    def rows() -> Iterator[tuple[str, Any]]:
        for path in datasets:
            for item in iter_jsonl(path):
                counted[0] += 1
                yield item

    leaks = find_leaks(rows(), frozen, fmt)
    if leaks:
        raise TrainingPoolLeak(leaks)
    return {"status": "checked", "frozen_sets": frozen.paths, "rows_checked": counted[0], "missing": missing}


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
