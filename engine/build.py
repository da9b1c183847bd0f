"""Build the embedded base model: our own tokenizer and a small Qwen2 language model.

:func:`train_tokenizer` trains a byte-level BPE that splits digits one per token (prices,
days and claim counts decide cases digit by digit) and carries a Qwen-style chat template.
:func:`build_base_model` trains a small ``Qwen2ForCausalLM`` from scratch as a plain
language model (next-token loss on text) and saves model + tokenizer in one directory,
which :func:`engine.loading.load_tokenizer` / :func:`engine.loading.load_base_model` open.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from engine.budget import Fit, Pace, apply_rates, continued_warmup, squeezed, warmup_end_after_refit

log = logging.getLogger(__name__)
clock = time.time  # a base build's time budget reads it (tests give it a clock of their own)

EOT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END)
# Written into tokenizer_config.json: engine.loading sees it and opens the tokenizer with
# PreTrainedTokenizerFast, because AutoTokenizer would swap in Qwen2's pre-tokenizer (FINDINGS).
TOKENIZER_MARKER = "policyops_tokenizer"

# Qwen's turn layout: <|im_start|>role\ncontent<|im_end|>\n; generation prompt <|im_start|>assistant\n.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class BuildError(ValueError):
    """The inputs of a build are unusable (no texts, a vocabulary too small, ...)."""


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts``.

    In: the training texts, the target vocabulary size (>= 256 bytes + 3 special tokens), and
    optionally a directory to save it to. Out: the tokenizer (eos ``<|im_end|>``, pad
    ``<|endoftext|>``, Qwen-style chat template). Raises :class:`BuildError` on a vocabulary
    too small for the byte alphabet.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise BuildError(f"vocab_size {vocab_size} is below 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=EOT,
        bos_token=None,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=4096,
    )
    if out_dir is not None:
        save_tokenizer(fast, out_dir)
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """Save ``tokenizer`` and mark it as ours in tokenizer_config.json (see TOKENIZER_MARKER)."""
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg[TOKENIZER_MARKER] = True
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")


@dataclass
class BaseModelConfig:
    """Shape and training schedule of the embedded base model."""

    vocab_size: int = 2000  # BPE vocabulary incl. the 3 special tokens
    hidden_size: int = 192  # width of the residual stream
    num_layers: int = 4
    num_heads: int = 6  # head dim 32
    num_kv_heads: int = 2  # grouped-query attention, as Qwen2
    intermediate_size: int = 512  # SwiGLU inner width
    block_size: int = 256  # tokens per training sequence (texts are packed)
    batch_size: int = 16  # sequences per optimiser step
    steps: int = 150  # optimiser steps
    lr: float = 3e-3  # one-cycle peak learning rate
    warmup: float = 0.1  # share of steps spent warming up
    weight_decay: float = 0.1
    # On a GPU: fp32 maths, tf32 (fp32 weights, TF32 matrix products) or bf16 (autocast; fp32 weights,
    # which are what is saved). On the CPU every value trains in fp32, so one config builds anywhere.
    precision: str = "fp32"
    # A time budget in minutes (None: none), counted from the build's start (the tokenizer's training
    # included): training stops after the step that reaches it and the model is saved as it stands
    # (build_info.json: steps_done), so a build on a lent machine keeps its work. budget_schedule "fit"
    # (engine.budget) times the first steps and, when the planned ones will not fit, ends the build and
    # its one-cycle schedule (decay to 10%) at the step that does (build_info.json: fitted_steps,
    # seconds_per_step); "cut" keeps the plan and stops wherever the budget runs out.
    max_minutes: float | None = None
    budget_schedule: str = "fit"

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "tf32", "bf16")

    def problems(self) -> list[str]:
        """Each number or name out of its range, as ``field: value; must be ...`` (none: all good), so
        a command line refuses a mistake before the corpus and the tokenizer are made."""
        def finite(x: float) -> bool:
            return isinstance(x, int | float) and math.isfinite(x)

        heads, kv = self.num_heads, self.num_kv_heads
        checks = [
            ("vocab_size", 256 + len(SPECIAL_TOKENS) <= self.vocab_size <= 262_144,
             f"from {256 + len(SPECIAL_TOKENS)} (the bytes and special tokens) to 262144"),
            ("hidden_size", 8 <= self.hidden_size <= 16_384, "from 8 to 16384"),
            ("num_layers", 1 <= self.num_layers <= 256, "from 1 to 256"),
            ("num_heads", 1 <= heads <= 256 and self.hidden_size % max(heads, 1) == 0,
             "from 1 to 256 and divide hidden_size"),
            ("num_kv_heads", 1 <= kv <= max(heads, 1) and heads % max(kv, 1) == 0,
             "from 1 to num_heads and divide num_heads"),
            ("intermediate_size", 1 <= self.intermediate_size <= 65_536, "from 1 to 65536"),
            ("block_size", 8 <= self.block_size <= 32_768, "from 8 to 32768"),
            ("batch_size", 1 <= self.batch_size <= 4096, "from 1 to 4096"),
            ("steps", 1 <= self.steps <= 10_000_000, "from 1 to 10000000"),
            ("lr", finite(self.lr) and 0 < self.lr <= 1, "> 0 and <= 1"),
            ("warmup", finite(self.warmup) and 0 <= self.warmup <= 1, "from 0 to 1"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("precision", self.precision in self.PRECISIONS, "one of " + ", ".join(self.PRECISIONS)),
            ("max_minutes",
             self.max_minutes is None or (finite(self.max_minutes) and 0 < self.max_minutes <= 10_080),
             "> 0 and <= 10080 (or unset)"),
            ("budget_schedule", self.budget_schedule in ("fit", "cut"), "'fit' or 'cut'"),
        ]
        return [f"{name}: {getattr(self, name)!r}; must be {rule}" for name, ok, rule in checks if not ok]

    def qwen2_config(self, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
        return Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=max(2048, self.block_size),
            tie_word_embeddings=True,
            rope_theta=10000.0,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )


def seed_everything(seed: int) -> None:
    """Seed Python and torch so that a build or a training run is repeatable."""
    random.seed(seed)
    torch.manual_seed(seed)


def pack_texts(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], block_size: int) -> torch.Tensor:
    """Tokenize ``texts``, join them with ``<|endoftext|>`` and cut the stream into blocks.

    Out: a LongTensor (n_blocks, block_size). Raises :class:`BuildError` when the texts make
    less than one block.
    """
    stream: list[int] = []
    eot = tokenizer.convert_tokens_to_ids(EOT)
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eot)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise BuildError(f"{len(stream)} tokens of text make no block of {block_size}")
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def _warm_steps(total: int, warmup: float) -> int:
    return max(1, int(total * warmup))


def _refit_one_cycle(sched: Any, fit: Fit, step: int, ended: int, warm: int, config: BaseModelConfig,
                     seconds_per_step: float | None) -> None:
    """Make the build's one-cycle schedule ``sched`` (ending at ``ended``, its warm-up at ``warm``) end at
    ``fit.total`` from ``step``: rebuilt for that length at the fit (the warm-up going on from the rate
    reached), the rest squeezed at a later shrink; the optimizer's rates follow."""
    if fit.first:
        new_warm = warmup_end_after_refit(step, warm, config.steps, fit.total,
                                          _warm_steps(fit.total, config.warmup))
        sched.lr_lambdas = [continued_warmup(lambda s, t=fit.total, w=new_warm: _one_cycle(s, t, w),
                                             step, old(step), new_warm) for old in sched.lr_lambdas]
        log.warning("time budget: at %.3f s a step, %d of the planned %d steps fit in %g minutes; the build "
                    "and its schedule now end at step %d", seconds_per_step, fit.total, config.steps,
                    config.max_minutes, fit.total)
    else:
        sched.lr_lambdas = [squeezed(old, step, ended, fit.total) for old in sched.lr_lambdas]
        log.warning("time budget: at step %d the latest steps were slower; the build ends at step %d "
                    "instead of %d, the rest of its schedule squeezed into the steps left", step, fit.total,
                    ended)
    apply_rates(sched)


def _one_cycle(step: int, total: int, warm: int) -> float:
    """Learning-rate factor: linear warm-up over ``warm`` steps, then cosine decay to 10%."""
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_language_model(
    model: Qwen2ForCausalLM, blocks: torch.Tensor, config: BaseModelConfig, seed: int,
    began: float | None = None, budget: dict[str, Any] | None = None,
) -> list[float]:
    """Train ``model`` on ``blocks`` with next-token loss, on the model's device; out: the loss of every
    step. The batches are drawn on the CPU, so a seed picks the same batches on any device. A time
    budget (``config.max_minutes``) counts from ``began`` (a ``time.time()``; default: now); with
    ``config.budget_schedule == "fit"`` it may end the run early with its schedule (``budget``, when
    given, gets ``fitted_steps`` and ``seconds_per_step``)."""
    if config.precision not in config.PRECISIONS:
        allowed = ", ".join(config.PRECISIONS)
        raise BuildError(f"precision: expected one of {allowed}, got {config.precision!r}")
    if config.max_minutes is not None and not (math.isfinite(config.max_minutes) and config.max_minutes > 0):
        raise BuildError(f"max_minutes: expected a number > 0 (or none), got {config.max_minutes!r}")
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and config.precision == "bf16")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = on_gpu and config.precision == "tf32" or tf32
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    plan = [config.steps]  # the schedule's length: the planned steps, or those a fitted budget allows
    warm = _warm_steps(config.steps, config.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _one_cycle(s, config.steps, warm))
    model.train()
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc="base LM", unit="step")
    began = clock() if began is None else began
    deadline = math.inf if config.max_minutes is None else began + config.max_minutes * 60
    pace = (Pace(config.max_minutes * 60, config.steps)
            if config.max_minutes is not None and config.budget_schedule == "fit" else None)
    budget = {} if budget is None else budget
    try:
        for step in bar:
            idx = torch.randint(0, blocks.size(0), (min(config.batch_size, blocks.size(0)),), generator=gen)
            batch = blocks[idx].to(device)
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # tiny models spike early
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
            done, now = step + 1, clock()
            if now >= deadline and done < plan[0]:
                log.warning("time budget: %g minutes used at step %d of %d; the model is saved as it stands",
                            config.max_minutes, done, plan[0])
                break
            if done >= plan[0]:
                break
            if pace is not None and (fit := pace.after_step(done, now - began)) is not None:
                _refit_one_cycle(sched, fit, done, plan[0], warm, config, pace.seconds_per_step)
                plan[0] = budget["fitted_steps"] = fit.total
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    budget.setdefault("fitted_steps", None)
    budget["seconds_per_step"] = pace.seconds_per_step if pace is not None else None
    model.eval()
    return losses


def build_base_model(
    out_dir: str | Path,
    texts: Sequence[str],
    config: BaseModelConfig | None = None,
    seed: int = 0,
    tokenizer_texts: Sequence[str] | None = None,
    extra_files: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train tokenizer + base language model on ``texts`` and save both to ``out_dir``.

    In: the language-model texts (no answers: this is the untuned baseline), the shape and
    schedule, a seed, optional separate tokenizer texts, and optional extra JSON files to save
    beside the model (e.g. ``{"prompt_format.json": {...}}``), and the ``device`` to train on (cpu,
    cuda, cuda:N; the weights are saved from the CPU in fp32 either way). Out: build figures (params,
    losses, seconds), also written to ``build_info.json``. Raises :class:`BuildError` on empty input.
    """
    config = config or BaseModelConfig()
    texts = list(texts)
    if not texts:
        raise BuildError("no texts to train the base model on")
    seed_everything(seed)
    started = clock()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(tokenizer_texts or texts, config.vocab_size)
    blocks = pack_texts(tokenizer, texts, config.block_size)
    seed_everything(seed)
    model = Qwen2ForCausalLM(config.qwen2_config(tokenizer)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("base model: %d params, %d blocks of %d tokens", n_params, blocks.size(0), config.block_size)
    budget: dict[str, Any] = {}
    losses = train_language_model(model, blocks, config, seed, began=started,  # a budget counts the tokenizer
                                  budget=budget)
    model = model.to("cpu")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    info = {
        "config": asdict(config),
        "seed": seed,
        "device": str(device),
        "params": n_params,
        "n_texts": len(texts),
        "n_tokens": int(blocks.numel()),
        "steps_done": len(losses),
        **budget,
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "seconds": round(clock() - started, 1),
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    for name, data in (extra_files or {}).items():
        (out / name).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return info
