"""What every training method shares (SFT in :mod:`engine.training`, DPO in :mod:`engine.dpo`): the
model to train (NF4 when it works, an adapter continued), the LoRA shape, precision, the run's log
file and its artefacts (run_config.json, prompt_format.json, data hashes, system info, metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from engine.budget import (
    Evaluations,
    Fit,
    Pace,
    apply_rates,
    continued_warmup,
    squeezed,
    warmup_end_after_refit,
)
from engine.loading import dtype_name, load_base_model, peft_wrapping, pick_dtype
from engine.registry import PROMPT_FORMAT_FILE, REPO_ROOT, ModelSpec
from engine.sft_data import ConfigError, RunConfig
from policies.prompt import PromptFormat

log = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # console and train.log


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


def trainer_args(cfg: RunConfig) -> dict[str, Any]:
    """The trainer arguments SFT and DPO share: schedule, batches, length, logging, device, precision."""
    return {
        "output_dir": cfg.output_dir,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_eval_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "max_length": cfg.max_length,
        # transformers 5's names (``gradient_checkpointing*`` are deprecated aliases that warn)
        "activation_checkpointing": cfg.gradient_checkpointing,
        # Non-reentrant checkpointing is the kind DDP and LoRA (frozen inputs) work with.
        "activation_checkpointing_kwargs": {"use_reentrant": False} if cfg.gradient_checkpointing else None,
        "ddp_find_unused_parameters": False,  # every LoRA weight takes part in every step
        "logging_steps": cfg.logging_steps,
        "logging_first_step": True,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "use_cpu": not torch.cuda.is_available(),
        **precision_flags(cfg.precision),
        "tf32": True if cfg.tf32 and torch.cuda.is_available() else None,
    }


def is_main_process() -> bool:
    """True in a single process and in rank 0 of a distributed run (``accelerate launch`` / torchrun set
    ``RANK``): the one process that writes the adapter's artefacts and train.log."""
    return int(os.environ.get("RANK", "0")) == 0


def end_processes() -> None:
    """Close a distributed run's process group once every rank is done (no-op in a single process).

    Left open, gloo's worker threads outlive the interpreter's teardown and a rank can abort at exit
    ("terminate called without an active exception") after the adapter was saved, failing the launch."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def uses_fsdp() -> bool:
    """True under ``accelerate launch`` with an FSDP config (it sets ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def kbit_device_map() -> dict[str, int] | None:
    """Where a rank's 4-bit weights go: its own GPU (``{"": local_rank}``); None on CPUs and under FSDP,
    which places (and shards) the weights itself."""
    if not torch.cuda.is_available() or uses_fsdp():
        return None
    from accelerate import PartialState

    return {"": PartialState().local_process_index}


def effective_batch(args: Any) -> dict[str, int]:
    """Examples per optimiser step: per device x processes x gradient accumulation (trainer ``args``)."""
    sizes = {"per_device": args.per_device_train_batch_size, "processes": args.world_size,
             "gradient_accumulation": args.gradient_accumulation_steps}
    return {**sizes, "effective": sizes["per_device"] * sizes["processes"] * sizes["gradient_accumulation"]}


def log_leak_check(leak_check: dict[str, Any], frozen_sets: list[str]) -> None:
    """Say in the run's log what :func:`~engine.sft_data.check_frozen_sets` found: rows checked, or
    a warning when the rows were not checked, or a set asked for was not found (a mistyped path)."""
    if leak_check["status"] == "checked":
        log.info("no training row matches a frozen set (%d rows checked against %s)",
                 leak_check["rows_checked"], ", ".join(leak_check["frozen_sets"]))
        if leak_check["missing"]:
            log.warning("frozen sets not found, so not checked against: %s", ", ".join(leak_check["missing"]))
    else:
        log.warning("training rows NOT checked against the frozen evaluation sets (frozen_sets %s: %s)",
                    frozen_sets, leak_check["status"])


def log_effective_batch(args: Any) -> dict[str, int]:
    batch = effective_batch(args)
    log.info("effective batch size %d = %d per device x %d processes x %d gradient accumulation",
             batch["effective"], batch["per_device"], batch["processes"], batch["gradient_accumulation"])
    return batch


def lora_config(cfg: RunConfig, tied_embeddings: bool = True) -> Any:
    """The LoRA adapter: rank, alpha, dropout, all linear layers (or the listed ones), embeddings optional.

    With trained embeddings, PEFT keeps the output layer tied to them only when the base ties the two
    (``tied_embeddings``; asking it of an untied base logs a warning and does nothing)."""
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
        ensure_weight_tying=cfg.train_embeddings and tied_embeddings,
        bias="none",
        task_type="CAUSAL_LM",
    )


def ties_embeddings(model: Any) -> bool:
    """Whether ``model``'s output layer shares its input embeddings' weights (its config says so)."""
    config = getattr(model, "config", None)
    return bool(getattr(config, "tie_word_embeddings", False))


def load_model_for_training(spec: ModelSpec, cfg: RunConfig) -> tuple[Any, str]:
    """Open the base for LoRA training. NF4 4-bit when asked and it works (a forward pass is tried);
    otherwise a logged warning and plain weights. When ``spec`` carries an adapter (``--model``
    an adapter dir), that adapter is loaded trainable and training continues it.
    Out: (model, the quantisation used)."""
    model = load_base_model(spec, quantize=cfg.quantization, dtype=cfg.precision,
                            device_map=kbit_device_map() if cfg.quantization == "nf4" else None,
                            fsdp=uses_fsdp())
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
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    return model, quantization


def build_trainer(trainer_cls: Any, spec: ModelSpec, cfg: RunConfig, args: Any,
                  train_examples: list[dict[str, Any]], eval_examples: list[dict[str, Any]] | None,
                  callbacks: Any, began: float | None = None, **extra: Any) -> tuple[Any, Any, str]:
    """A TRL trainer (``trainer_cls``: SFT or DPO) over ``spec``'s base, the way every recipe starts:
    the tokenizer padding on the right, the model loaded for training (4-bit or not), a fresh LoRA
    adapter from ``cfg`` or, when ``spec`` names an adapter dir, that adapter continued. ``extra``:
    the trainer's own arguments; ``began``: when the run started (``time.time()``), from which a time
    budget (``cfg.max_train_minutes``) counts. Returns (trainer, tokenizer, quantization)."""
    from datasets import Dataset

    from engine.loading import load_tokenizer

    tokenizer = load_tokenizer(spec.base)
    tokenizer.padding_side = "right"  # training pads on the right; generation (load_tokenizer): left
    model, quantization = load_model_for_training(spec, cfg)
    with peft_wrapping():  # the trainer wraps the model in a PeftModel
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(train_examples),
            eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
            processing_class=tokenizer,
            # an adapter dir: continue it
            peft_config=None if spec.adapters else lora_config(cfg, ties_embeddings(model)),
            callbacks=[*callbacks, *([TimeBudget(cfg.max_train_minutes, began or time.time(),
                                                 fit=cfg.budget_schedule == "fit",
                                                 eval_rows=len(eval_examples or []))]
                                     if cfg.max_train_minutes else [])],
            **extra,
        )
    check_kept(len(trainer.train_dataset), len(train_examples), cfg.max_length, "training")
    if eval_examples:
        check_kept(len(trainer.eval_dataset), len(eval_examples), cfg.max_length, "evaluation")
    if uses_fsdp() and not getattr(trainer, "is_fsdp_enabled", False):
        # accelerate enables FSDP only on accelerators; on CPUs it quietly trains as DDP
        log.warning("the accelerate config asks for FSDP, but these processes train without it (%s): "
                    "accelerate shards only on GPUs, so each process holds every weight",
                    "DDP" if trainer.args.world_size > 1 else "one process")
    return trainer, tokenizer, quantization


class TimeBudget(TrainerCallback):
    """Keeps training within ``minutes`` since the run ``began`` (a ``time.time()``: loading, checking and
    tokenizing the data count, as they do against a deadline).

    ``fit`` (the default): once the first steps are timed (:mod:`engine.budget`: 3% of the planned steps or
    of the budget, at least 3 steps), a run whose planned steps will not fit in the time left ends at the
    step that does, and its learning-rate schedule is rebuilt to end there (the same type, warm-up share and
    decay, to zero for cosine or linear), since a schedule cut short ends at a high learning rate; when its
    latest steps later fall behind, it ends earlier again with the rest of its schedule squeezed in. Either
    way, the step that reaches the budget is the last (the safety net, and all of ``cut``); the run then
    ends as any run does (the adapter saved, the best epoch's checkpoint loaded when there is one), so a run
    on a lent machine with a deadline keeps what it learnt instead of being killed with nothing. On several
    processes the ranks agree (the largest elapsed time wins, so they time the same pace and fit the same
    step), so none waits on another that stopped. The time between a step's end and an evaluation's or a
    checkpoint's (``on_evaluate``, ``on_save``) is not timed as steps: an evaluation each epoch is not
    read as a slowdown, and the steps ahead are planned with as much of it per step as so far. Told of
    the evaluation set (``eval_rows``) of a run that evaluates at each epoch's end, and so after its last
    step, the budget keeps the time of the evaluations still ahead whole instead
    (:class:`engine.budget.Evaluations`: the latest one's time, or an estimate before one was timed), and
    the safety net stops where the evaluation after the last step still fits.
    :meth:`report` is metrics.json's ``time_budget``."""

    clock = staticmethod(time.time)  # tests give it a clock of their own

    def __init__(self, minutes: float, began: float, fit: bool = True, eval_rows: int = 0):
        self.minutes = minutes
        self.began = began
        self.fit = fit
        self.eval_rows = eval_rows  # the evaluation set's rows (0: the run does not evaluate)
        self.stopped_at: int | None = None
        self.max_steps = 0  # as planned
        self.fitted_steps: int | None = None
        self.kept_for_evaluations_s: float | None = None  # at the fit, or at the stop
        self.pace = Pace(minutes * 60, 0)
        self.paused_s = 0.0  # this rank's seconds between steps spent evaluating and saving checkpoints
        self.evaluating_s = 0.0  # of them, evaluating
        self.evaluation_s: float | None = None  # the latest evaluation's seconds
        self._mark: float | None = None  # the clock at the last step's end, or at the last pause's

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.max_steps = state.max_steps
        self.pace = Pace(self.minutes * 60, state.max_steps,
                         evaluations=self._evaluations(args, state, kwargs))

    def _evaluations(self, args: Any, state: Any, kwargs: dict[str, Any]) -> Evaluations | None:
        """The run's evaluations when it evaluates at each epoch's end (and so after its last step)."""
        if not self.eval_rows or getattr(args.eval_strategy, "value", args.eval_strategy) != "epoch":
            return None
        accumulation = max(int(args.gradient_accumulation_steps), 1)
        try:
            batches = len(kwargs["train_dataloader"])
            steps_per_epoch = batches // accumulation + int(batches % accumulation > 0)
        except (KeyError, TypeError):  # no dataloader, or one without a length
            steps_per_epoch = math.ceil(state.max_steps / max(int(state.num_train_epochs or 1), 1))
        rows = math.ceil(self.eval_rows / max(int(args.world_size), 1))
        return Evaluations(max(steps_per_epoch, 1), rows / (args.per_device_train_batch_size * accumulation))

    @property
    def seconds_per_step(self) -> float | None:
        """The pace the fit measured (None before it did, or with ``fit`` off)."""
        return self.pace.seconds_per_step

    def _elapsed(self, now: float) -> tuple[float, float, float, float | None]:
        """(seconds since the run began at ``now``, of them spent paused, of those evaluating, the latest
        evaluation's seconds), each the largest of any rank's."""
        latest = self.evaluation_s
        shared = [now - self.began, self.paused_s, self.evaluating_s, -1.0 if latest is None else latest]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tensor = torch.tensor(shared, dtype=torch.float64)
            if torch.distributed.get_backend() == "nccl":
                tensor = tensor.cuda()
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
            shared = [float(x) for x in tensor.tolist()]
        elapsed, paused, evaluating, latest_shared = shared
        return elapsed, paused, evaluating, None if latest_shared < 0 else latest_shared

    def _pause(self) -> float:
        """Count the time since the last step ended (or the last pause was counted) as paused, and return
        it. Local to this rank: the ranks share it at the next step's end, the one place they meet."""
        if self._mark is None:
            return 0.0
        now = self.clock()
        spent = max(now - self._mark, 0.0)
        self.paused_s += spent
        self._mark = now
        return spent

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        spent = self._pause()
        if self._mark is not None:
            self.evaluating_s += spent
            self.evaluation_s = spent

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pause()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._mark = now = self.clock()
        elapsed, paused, evaluating, self.pace.evaluation_s = self._elapsed(now)
        step = state.global_step
        # stopping now leaves one evaluation, the one after the last step (0 s for a run without)
        end_evaluation = self.pace.kept_s(step, step, self.pace.timed_pace(step, elapsed - paused))
        if elapsed + end_evaluation >= self.minutes * 60 and step < state.max_steps:
            control.should_training_stop = True
            self.stopped_at = step
            if self.pace.evaluations is not None:
                self.kept_for_evaluations_s = end_evaluation
            kept = f", {end_evaluation:.0f} s kept for the evaluation after it" if end_evaluation else ""
            log.warning("time budget: %.2f of %g minutes used at step %d of %d%s; training stops here and "
                        "the adapter is saved as it stands", elapsed / 60, self.minutes, step,
                        state.max_steps, kept)
        elif self.fit and (fit := self.pace.after_step(step, elapsed, paused, evaluating)) is not None:
            self.kept_for_evaluations_s = self.pace.kept_at_fit_s
            self._refit(args, state, fit, kwargs.get("lr_scheduler"))

    def _refit(self, args: Any, state: Any, fit: Fit, scheduler: Any) -> None:
        schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
        refitted = (refit_schedule(scheduler, args, fit.total, planned=state.max_steps) if fit.first
                    else squeeze_schedule(scheduler, state.max_steps, fit.total))
        if not refitted:
            self.fit = False  # nothing to refit later either
            log.warning("time budget: the %s schedule cannot be refitted; %d of the planned %d steps will "
                        "fit and the run stops where the budget runs out", schedule, fit.total,
                        state.max_steps)
            return
        ended = state.max_steps
        state.max_steps = self.fitted_steps = fit.total  # the trainer ends the run there, as at a planned end
        if fit.first:
            log.warning("time budget: at %.2f s a step, %d of the planned %d steps fit in %g minutes; the "
                        "run and its %s learning-rate schedule now end at step %d", self.seconds_per_step,
                        fit.total, self.max_steps, self.minutes, schedule, fit.total)
        else:
            log.warning("time budget: at step %d the latest steps were slower; the run ends at step %d "
                        "instead of %d, the rest of its %s schedule squeezed into the steps left",
                        state.global_step, fit.total, ended, schedule)

    def report(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "schedule": "fit" if self.fit else "cut",
                "stopped_at_step": self.stopped_at, "max_steps": self.max_steps,
                "fitted_steps": self.fitted_steps, "seconds_per_step": self.seconds_per_step,
                "paused_s": round(self.paused_s, 3), "evaluation_s": _rounded(self.evaluation_s),
                "kept_for_evaluations_s": _rounded(self.kept_for_evaluations_s)}


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def refit_schedule(scheduler: Any, args: Any, total: int, planned: int | None = None) -> bool:
    """Make ``scheduler`` (the trainer's, built by transformers' ``get_scheduler`` from ``args`` for
    ``planned`` steps) the schedule ``args`` gives a run of ``total`` steps, from the step it is at; the
    optimizer's learning rates follow at once. Refitted inside its warm-up, the warm-up goes on from the
    rate reached to the new schedule's peak (:func:`engine.budget.warmup_end_after_refit`: its rest,
    shrunk as the run shrank) instead of jumping there; ``planned`` None: as if refitted after it.
    False (nothing changed) for a scheduler that is not a ``LambdaLR`` (e.g. reduce_lr_on_plateau), whose
    length cannot be changed this way."""
    from transformers import get_scheduler

    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate may wrap it
    if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
        return False
    step = inner.last_epoch
    fresh_warm = args.get_warmup_steps(total)
    warm_end = fresh_warm if planned is None else warmup_end_after_refit(
        step, args.get_warmup_steps(planned), planned, total, fresh_warm)
    # the new schedule's factors, built on a stand-in optimizer so the real one's rates stay put
    stand_in = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]}
                                for _ in inner.optimizer.param_groups], lr=1.0)
    fresh = get_scheduler(args.lr_scheduler_type, optimizer=stand_in,
                          num_warmup_steps=warm_end, num_training_steps=total,
                          scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    if not isinstance(fresh, torch.optim.lr_scheduler.LambdaLR):
        return False
    inner.lr_lambdas = [continued_warmup(new, step, old(step), warm_end)
                        for old, new in zip(inner.lr_lambdas, fresh.lr_lambdas, strict=True)]
    apply_rates(inner)
    return True


def squeeze_schedule(scheduler: Any, end: int, total: int) -> bool:
    """Make ``scheduler`` (a ``LambdaLR`` for a run ending at ``end``) end at ``total`` instead, from the
    step it is at: the rest of its schedule squeezed into the steps left (:func:`engine.budget.squeezed`);
    the optimizer's rates follow at once. False (nothing changed) for a scheduler that is not a
    ``LambdaLR``."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate may wrap it
    if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
        return False
    inner.lr_lambdas = [squeezed(factor, inner.last_epoch, end, total) for factor in inner.lr_lambdas]
    apply_rates(inner)
    return True


def time_budget_report(trainer: Any) -> dict[str, Any] | None:
    """The run's :class:`TimeBudget` figures, or None when it had no budget."""
    budgets = [c for c in trainer.callback_handler.callbacks if isinstance(c, TimeBudget)]
    return budgets[0].report() if budgets else None


def check_kept(kept: int, given: int, max_length: int, what: str) -> None:
    """TRL drops the examples whose prompt alone fills ``max_length`` (no answer token left to
    train): warn when some went, raise ConfigError naming max_length when all did. A longer prompt
    format (say ``prompt_policy_facts``) with an old recipe's ``max_length`` would otherwise train
    on the few short prompts left, silently."""
    if kept >= given:
        return
    message = (f"max_length {max_length}: {given - kept} of {given} {what} examples have no answer token "
               f"within it (the prompt fills it) and were dropped")
    if kept == 0:
        raise ConfigError(f"{message}; raise max_length")
    log.warning("%s; raise max_length to train on them", message)


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


def finish_run(trainer: Any, tokenizer: Any, cfg: RunConfig, spec: ModelSpec, fmt: PromptFormat,
               quantization: str, result: Any, started: float, params: tuple[int, int],
               counts: tuple[int, int], extra: dict[str, Any]) -> dict[str, Any]:
    """Save the trained adapter and the tokenizer (left padding, for generation) to ``cfg.output_dir``
    and write the run's artefacts; out: metrics.json's content. ``params``: (trainable, total)
    parameters as trained; ``counts``: (train, eval) examples; ``extra``: the method's own figures.
    In a run on several processes every rank calls this (saving gathers the weights), and only the main
    process writes: the adapter once, then the tokenizer and the artefacts."""
    held = sharding(trainer)  # before saving: gathering a full state dict may change how weights are held
    if held["mode"] == "fsdp":  # gather the sharded adapter into one file
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(cfg.output_dir)  # writes on the main process only (Trainer.args.should_save)
    tokenizer.padding_side = "left"
    if is_main_process():
        tokenizer.save_pretrained(cfg.output_dir)
    trainable, total = params
    metrics = {
        **extra,
        "epochs": epoch_metrics(trainer.state.log_history),
        "train_loss": result.training_loss,
        "runtime_s": round(time.time() - started, 1),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / total,
        "train_examples": counts[0],
        "eval_examples": counts[1],
        "log_history": trainer.state.log_history,
        "batch_size": effective_batch(trainer.args),
        "sharding": held,
        "time_budget": time_budget_report(trainer),
    }
    if not is_main_process():
        return metrics
    write_artefacts(cfg.output_dir, cfg, spec, fmt, quantization, metrics)
    return metrics


def sharding(trainer: Any) -> dict[str, Any]:
    """How the trained model's weights were held across processes, measured on the model itself:
    ``{"mode": "single" | "ddp" | "fsdp", "processes", "sharded_tensors", "local_share"}``.
    A sharded weight is a DTensor (FSDP2) or a flat parameter (FSDP1, whose full size it keeps);
    ``local_share`` is the part of all weights' elements this rank held (about 1/processes when
    everything is sharded; 1.0 when nothing is)."""
    from torch.distributed.tensor import DTensor

    processes = trainer.args.world_size
    mode = "fsdp" if getattr(trainer, "is_fsdp_enabled", False) else ("ddp" if processes > 1 else "single")
    local = total = sharded = 0
    for tensor in (*trainer.model.parameters(), *trainer.model.buffers()):
        full = getattr(tensor, "_unpadded_unsharded_size", None)  # FSDP1's FlatParameter
        if isinstance(tensor, DTensor):
            sharded += 1
            local += tensor.to_local().numel()
            total += tensor.numel()
        elif full is not None:
            sharded += 1
            local += tensor.numel()
            total += full.numel()
        else:
            local += tensor.numel()
            total += tensor.numel()
    return {"mode": mode, "processes": processes, "sharded_tensors": sharded,
            "local_share": round(local / max(total, 1), 4)}


def trainable_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


@contextmanager
def train_log(output_dir: str) -> Iterator[None]:
    """While it is open, INFO records of every logger reaching the root go to OUTPUT_DIR/train.log too
    (the run's log artefact); the root logger's handlers and level are as before afterwards."""
    if not is_main_process():  # one train.log per run, from rank 0
        yield
        return
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(output_dir) / "train.log", mode="w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write to {output_dir} ({exc.strerror or exc})") from None
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
