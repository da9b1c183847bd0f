"""The in-process backend: transformers + PEFT, one base model loaded once, LoRA adapters on top.

The ``base`` variant runs with every adapter disabled; every other variant is an adapter by name.
``engine.serve`` puts this same backend behind an OpenAI-compatible HTTP API.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteriaList

from engine.backends.base import BASE_VARIANT, FastPath, Generation, GenerationSettings, UnknownVariant
from engine.constrained import AnswerGrammar, JsonSchemaLogitsProcessor
from engine.loading import adapter_loading, peft_wrapping
from policies import Case
from policies.prompt import PromptFormat, render_prompt

log = logging.getLogger(__name__)

GRAMMAR_CACHE_SIZE = 4  # compiled grammars kept for schemas other than the answer's (engine.serve)
STATIC_CACHE_KWARGS = ("cache_implementation", "max_cache_len")  # generate's own static cache
PREFIX_TURN_START = "<|im_start|>system"  # only a system turn is shared; a user's first turn is one-off
PREFIX_TURN_END = "<|im_end|>"  # the shared prompt prefix runs through the first turn's end (the system turn)


def tie_head_copies(model: Any) -> None:
    """Give a tied ``lm_head`` its trained-embedding copy for every adapter loaded after the first.

    An adapter trained with ``modules_to_save=["embed_tokens"]`` and weight tying shares that copy
    with ``lm_head``; PEFT 0.21's ``load_adapter`` adds the copy to ``embed_tokens`` only, so a second
    adapter would decode through the base's head. Here the head gets the same tensor, as the first
    adapter's does.
    """
    from peft.utils.other import ModulesToSaveWrapper

    wrappers = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules()
                if isinstance(m, ModulesToSaveWrapper)}
    emb, head = wrappers.get("embed_tokens"), wrappers.get("lm_head")
    if emb is None or head is None:
        return
    tied = head.original_module.weight is emb.original_module.weight or any(
        k in emb.modules_to_save and head.modules_to_save[k].weight is emb.modules_to_save[k].weight
        for k in head.modules_to_save)
    if not tied:
        return
    for name, module in emb.modules_to_save.items():
        if name not in head.modules_to_save:
            head.update(name, tied_module=module)  # registers the name too, so set_adapter finds it


class LocalPeftBackend:
    """transformers + PEFT in this process: one base model, any number of named LoRA adapters.

    ``model`` is the base model, or a ``PeftModel`` already holding adapters. Generation runs under
    a lock: adapter switching (``set_adapter`` / ``disable_adapter``) mutates the shared model, so
    two threads must never interleave. ``fast`` holds the speed options (:class:`FastPath`); set it
    at any time between calls.
    """

    def __init__(self, tokenizer: Any, model: Any, prompt_format: PromptFormat | None = None,
                 base_version: str = "base", adapter_versions: dict[str, str] | None = None,
                 fast: FastPath | None = None):
        self.tokenizer = tokenizer
        self.model = model
        self.prompt_format = prompt_format or PromptFormat()
        self.base_version = base_version
        self.adapter_versions = dict(adapter_versions or {})
        self.lock = threading.RLock()
        # Left padding: every prompt ends flush against the first generated token.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.grammar = AnswerGrammar.for_tokenizer(tokenizer, model_vocab_size=self._logits_width())
        self.stop_ids = self.grammar.stop_ids
        self.last_processor: Any = None  # the constrained decoder of the latest batch (its timing)
        self._grammars: OrderedDict[str, AnswerGrammar] = OrderedDict()  # other schemas, newest last
        self.fast = fast or FastPath()
        # (variant, its version, merged, prefix ids) -> the prefix's KV cache, most recently used last
        self._prefixes: OrderedDict[tuple[str, str, bool, tuple[int, ...]], Any] = OrderedDict()
        self.prefix_hits = 0  # prompts whose prefix came from the cache, for the benchmark
        self._merged: tuple[str, str, Any] | None = None  # (variant, version, merged copy of the base)
        self._static: tuple[tuple[bool, int, int], Any] | None = None  # (merged, rows, length), StaticCache

    # --- adapters --------------------------------------------------------------------------------
    @property
    def adapter_names(self) -> list[str]:
        peft_config = getattr(self.model, "peft_config", None)
        return list(peft_config) if peft_config else []

    @property
    def variants(self) -> list[str]:
        return [BASE_VARIANT, *self.adapter_names]

    def add_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Load the LoRA adapter at ``path`` as variant ``name`` on the shared base (no second base copy).

        Errors: ValueError for the reserved name ``base`` or a name already loaded; OSError/ValueError
        from PEFT when ``path`` holds no adapter for this base.
        """
        from peft import PeftModel

        if name == BASE_VARIANT or name in self.adapter_names:
            raise ValueError(f"adapter name {name!r} is reserved or already loaded")
        with self.lock:
            if isinstance(self.model, PeftModel):
                with adapter_loading():  # tied just below
                    self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            else:
                with peft_wrapping():
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name,
                                                           is_trainable=False)
            tie_head_copies(self.model)
            self.model.eval()
            self._prefixes.clear()
            self._merged = None
            self._static = None
        self.adapter_versions[name] = version or name

    def replace_adapter(self, name: str, path: str, version: str | None = None) -> None:
        """Serve the adapter at ``path`` as variant ``name`` (loaded or not), keeping the base loaded.

        The new weights load under a temporary name first, so a bad ``path`` leaves ``name`` as it
        was (OSError/ValueError from PEFT).
        """
        if name not in self.adapter_names:
            self.add_adapter(name, path, version)
            return
        staging = f"{name}__staging"
        self.add_adapter(staging, path, version)
        with self.lock:
            # PEFT warns when it deletes the active adapter: the one deleted is never the active one.
            self.model.set_adapter(staging)
            self.model.delete_adapter(name)
            with adapter_loading():  # tied just below
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            self.model.set_adapter(name)
            self.model.delete_adapter(staging)
            tie_head_copies(self.model)
            self.model.eval()
            self._prefixes.clear()
            self._merged = None
            self._static = None
        self.adapter_versions.pop(staging, None)
        self.adapter_versions[name] = version or name

    def model_version(self, variant: str) -> str:
        if variant == BASE_VARIANT:
            return self.base_version
        return f"{self.base_version}+{self.adapter_versions.get(variant, variant)}"

    @contextlib.contextmanager
    def _variant(self, variant: str) -> Iterator[None]:
        """Run the block as ``variant``: adapters disabled for base, the named adapter active otherwise."""
        if variant not in self.variants:
            raise UnknownVariant(variant, self.variants)
        if variant == BASE_VARIANT:
            ctx = self.model.disable_adapter() if self.adapter_names else contextlib.nullcontext()
            with ctx:
                yield
        else:
            self.model.set_adapter(variant)
            yield

    # --- generation ------------------------------------------------------------------------------
    def prompt(self, case: Case) -> str:
        return render_prompt(self.tokenizer, case, self.prompt_format)

    def prompt_size(self, prompt: str) -> int:
        """``prompt``'s length in tokens, the unit a batch is padded by."""
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def render_messages(self, messages: list[dict[str, str]]) -> str:
        """Chat ``messages`` as this model's prompt text (its chat template plus the generation prompt),
        the text :meth:`prompt` makes from a case's messages. Errors from the template propagate."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def grammar_for(self, schema: dict[str, Any] | None) -> AnswerGrammar:
        """The compiled grammar of a JSON ``schema`` (None or the answer schema: the one built at load).

        The last :data:`GRAMMAR_CACHE_SIZE` other schemas stay compiled. Raises
        :class:`~engine.constrained.ConstrainedDecodingError` for a schema that does not compile.
        """
        from policies import answer_json_schema

        if schema is None or schema == answer_json_schema():
            return self.grammar
        key = json.dumps(schema, sort_keys=True)
        with self.lock:
            if key not in self._grammars:
                self._grammars[key] = AnswerGrammar.for_tokenizer(
                    self.tokenizer, model_vocab_size=self._logits_width(), schema=schema)
                while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                    self._grammars.popitem(last=False)
            self._grammars.move_to_end(key)
            return self._grammars[key]

    def _logits_width(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def logits(self, prompts: list[str], variant: str) -> torch.Tensor:
        """Next-token logits after each prompt (rows of the left-padded batch); used by tests and probes."""
        with self.lock, self._variant(variant):
            enc = self._encode(prompts)
            return self.model(**enc).logits[:, -1, :].float().cpu()

    def _encode(self, prompts: list[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        # The chat template already holds any special tokens; adding more would change the ids.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = device or self._device()
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def generate(self, prompts: list[str], variant: str, constrained: bool,
                 settings: GenerationSettings, grammar: AnswerGrammar | None = None) -> list[Generation]:
        """Complete ``prompts`` as one left-padded batch. Out: one :class:`Generation` per prompt, in order.

        ``constrained`` decodes under ``grammar`` (default: the answer schema's). :attr:`fast` decides
        the grammar's schedule and the prefix cache. Errors: :class:`UnknownVariant`; torch errors
        (e.g. out of memory) propagate.
        """
        fast = self._fast()
        asked = len(prompts)
        if asked and fast.static_cache and fast.bucket_batches:  # a compiled graph per batch size: few
            prompts = prompts + [prompts[-1]] * (batch_bucket(asked) - asked)
        grammar = grammar or self.grammar
        processor = (grammar.processor(len(prompts), settings.max_new_tokens, overlap=fast.overlap_grammar)
                     if constrained else None)
        kwargs = self._generate_kwargs(settings, processor, fast)
        with self.lock:
            merged = self._merged_model(variant) if fast.merged == variant else None
            model = merged if merged is not None else self.model
            with contextlib.nullcontext() if merged is not None else self._variant(variant):
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                # under a static cache generate makes its own, unless the turns are copied into ours
                reuse = fast.prefix_cache and (fast.static_prefix or not fast.static_cache)
                enc, turns = self._encode_after_turns(prompts) if reuse else (self._encode(prompts), [])
                cache = self._prefix_cache(model, turns, variant) if turns else None
                if cache is not None and fast.static_cache:
                    needed = enc["input_ids"].shape[1] + settings.max_new_tokens
                    cache = self._static_prefix(model, cache, needed, fast.static_cache_len)
                if cache is not None:  # generate refuses a cache and a cache_implementation together
                    kwargs = {k: v for k, v in kwargs.items() if k not in STATIC_CACHE_KWARGS}
                enc = {k: v.to(self._device()) for k, v in enc.items()}
                out = self._run(model, enc, kwargs, cache, processor)
            self.last_processor = processor
        new_tokens = out[:, enc["input_ids"].shape[1]:].cpu()
        input_counts = enc["attention_mask"].sum(dim=1).tolist()
        errors = processor.errors if processor else [None] * len(prompts)
        rows = zip(new_tokens, input_counts, errors, strict=True)
        return [self._one(row, n_in, err) for row, n_in, err in rows][:asked]

    def _fast(self) -> FastPath:
        """:attr:`fast` decided for this device and prompt format (see :meth:`FastPath.resolve`)."""
        return self.fast.resolve(self._device(), long_prefix=self.prompt_format.policy == "full")

    @staticmethod
    def _run(model: Any, enc: dict[str, torch.Tensor], kwargs: dict[str, Any], cache: Any,
             processor: JsonSchemaLogitsProcessor | None) -> torch.Tensor:
        try:
            return model.generate(**enc, **kwargs, **({"cache": cache} if cache is not None else {}))
        finally:
            if processor is not None:
                processor.finish()  # the hook of the last token leaves a job on the worker

    def _merged_model(self, variant: str) -> Any:
        """The copy of the base with ``variant``'s adapter merged in (built on first use), or None when it
        cannot be built: the variant is ``base`` or unknown, one more base does not fit in free memory,
        or PEFT cannot merge the adapter (each logged once per adapter version). Over a 4-bit base the
        copy is plain, in the compute dtype (:func:`engine.merge_4bit.merge_dequantized`: the NF4 values the
        adapter was trained on plus its delta), so it costs the unquantised model's memory."""
        from engine.merge_4bit import dequantized_bytes, merge_dequantized

        version = self.model_version(variant)
        if self._merged is not None and self._merged[:2] == (variant, version):
            return self._merged[2]
        self._merged = None  # drop the previous copy before building the next
        four_bit = _linear4bit_count(self.model) > 0
        why = None
        if variant not in self.adapter_names:
            why = "it is not an adapter"
        else:  # an adapter: does one more copy of the base fit?
            need = dequantized_bytes(self.model) if four_bit else self.memory_bytes()["total"]
            if need > _free_bytes(self._device()):
                why = f"{need / 2**30:.2f} GiB are not free"
        merged = None
        if why is None:
            try:
                with self._variant(variant):
                    merged = (merge_dequantized(self.model, variant) if four_bit
                              else copy.deepcopy(self.model).merge_and_unload(adapter_names=[variant]).eval())
            except ValueError as exc:
                why = str(exc)
        if merged is None:
            log.warning("serving %s unmerged: %s", variant, why)
        elif four_bit:
            log.info("serving %s from a merged copy of the 4-bit base in %s (%.2f GiB)", variant,
                     next(merged.parameters()).dtype, _weight_bytes(merged) / 2**30)
        self._merged = (variant, version, merged)
        return merged

    def _generate_kwargs(self, settings: GenerationSettings, processor: JsonSchemaLogitsProcessor | None,
                         fast: FastPath) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
            "eos_token_id": self.stop_ids, "pad_token_id": self.tokenizer.pad_token_id,
            "logits_processor": LogitsProcessorList([processor] if processor else []),
        }
        if processor is not None and processor.overlap:
            kwargs["stopping_criteria"] = StoppingCriteriaList([processor.next_mask_hook()])
        if fast.static_cache:
            kwargs.update(cache_implementation="static", max_cache_len=fast.static_cache_len)
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:  # silence the generation_config's sampling defaults under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs

    def _encode_after_turns(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
        """The batch on the CPU with each row's system turn first, and those turns' ids.

        Rows read ``[system turn][padding][rest of the prompt]``, every turn starting at position 0, so
        each row's turn can come from the KV cache of an earlier prompt with the same turn
        (:meth:`_prefix_cache`); the rest starts after the longest turn. The padding is masked and
        ``generate`` numbers positions from the mask, so each row attends to and is positioned as in
        the left-padded batch. When a prompt has no system turn followed by more text: the usual
        left-padded batch and no turns.
        """
        if not all(p.startswith(PREFIX_TURN_START) for p in prompts):  # e.g. a served chat with no system
            return self._encode(prompts, torch.device("cpu")), []     # turn: nothing another prompt shares
        rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        end_id = self.tokenizer.convert_tokens_to_ids(PREFIX_TURN_END)
        cut = [row.index(end_id) + 1 if end_id in row else len(row) for row in rows]
        if any(n >= len(row) for n, row in zip(cut, rows, strict=True)):
            return self._encode(prompts, torch.device("cpu")), []
        # the longest turn, then room for the longest rest: a row's rest never reaches into the turns
        width = max(cut) + max(len(row) - n for n, row in zip(cut, rows, strict=True))
        pad, pairs = self.tokenizer.pad_token_id, list(zip(cut, rows, strict=True))
        ids = [row[:n] + [pad] * (width - len(row)) + row[n:] for n, row in pairs]
        mask = [[1] * n + [0] * (width - len(row)) + [1] * (len(row) - n) for n, row in pairs]
        enc = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
        return enc, [row[:n] for n, row in pairs]

    def _prefix_cache(self, model: Any, turns: list[list[int]], variant: str) -> Any:
        """A KV cache of each row's system turn (``turns``), padded to the longest, for one batch.

        Each distinct turn is computed once under the active ``variant`` by ``model`` (the turns not
        yet cached, in one right-padded batch) and kept per (variant, version, merged or not, turn
        ids), at most ``fast.prefix_cache_size`` of them, least recently used dropped.
        """
        from transformers import DynamicCache

        version, merged = self.model_version(variant), model is not self.model
        keys = [(variant, version, merged, tuple(turn)) for turn in turns]
        missing = list(dict.fromkeys(k for k in keys if k not in self._prefixes))
        self.prefix_hits += sum(k not in missing for k in keys)
        if missing:
            longest, pad = max(len(k[3]) for k in missing), self.tokenizer.pad_token_id
            ids = torch.tensor([list(k[3]) + [pad] * (longest - len(k[3])) for k in missing])
            mask = (torch.arange(longest) < torch.tensor([[len(k[3])] for k in missing])).long()
            out = model(input_ids=ids.to(self._device()), attention_mask=mask.to(self._device()),
                        use_cache=True, logits_to_keep=1).cache
            for j, k in enumerate(missing):  # right padding: each turn's own keys and values come first
                n = len(k[3])
                self._prefixes[k] = [(kv[0][j:j + 1, :, :n].clone(), kv[1][j:j + 1, :, :n].clone())
                                     for kv in out]
        for k in keys:
            self._prefixes.move_to_end(k)
        width = max(map(len, turns))

        def padded(states: torch.Tensor) -> torch.Tensor:  # [1, heads, n, dim] -> width, zeros (masked) after
            return nn.functional.pad(states, (0, 0, 0, width - states.shape[2]))

        rows = [self._prefixes[k] for k in keys]  # per row: (keys, values) per layer

        def stacked(layer: int, kind: int) -> torch.Tensor:  # kind 0: keys, 1: values; one row per prompt
            return torch.cat([padded(row[layer][kind]) for row in rows])

        layers = [(stacked(i, 0), stacked(i, 1)) for i in range(len(rows[0]))]
        while len(self._prefixes) > max(self.fast.prefix_cache_size, len(set(keys))):
            self._prefixes.popitem(last=False)
        return DynamicCache(ddp_cache_data=layers, config=model.config)

    def _static_prefix(self, model: Any, turns: Any, needed: int, length: int) -> Any:
        """The batch's system turns (``turns``, a DynamicCache) copied into this backend's static cache of
        ``length`` tokens for the batch's size, which generate then continues; None when the call needs
        more than ``length`` tokens (generate then makes a longer cache itself, without the turns).

        One static cache is kept, for the latest (model, batch size), so its tensors keep their
        addresses from call to call as transformers' own does.
        """
        from transformers import StaticCache

        if needed > length:
            return None
        layers = list(turns)  # (keys, values, sliding window) per layer
        key = (model is not self.model, layers[0][0].shape[0], length)
        if self._static is None or self._static[0] != key:
            self._static = None  # the previous one goes before the next is allocated
            self._static = (key, StaticCache(config=model.config, max_cache_len=length))
        static = self._static[1]
        static.reset()
        for i, (keys, values, *_) in enumerate(layers):
            static.update(keys, values, i)
        return static

    def _one(self, row: torch.Tensor, n_in: int, grammar_error: str | None) -> Generation:
        ids = row.tolist()
        stop_at = next((i for i, t in enumerate(ids) if t in self.stop_ids), None)
        kept = ids if stop_at is None else ids[:stop_at]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        n_out = len(ids) if stop_at is None else stop_at + 1
        return Generation(text=text, input_tokens=int(n_in), output_tokens=n_out,
                          hit_token_limit=stop_at is None, grammar_error=grammar_error)

    def figures(self) -> dict[str, Any]:
        """``backend``, ``memory`` (:meth:`memory_bytes`), ``linear4bit_modules``, ``last_decoder``
        ((seconds the grammar held up generate, steps) of the latest constrained batch), ``fast`` (the
        options as resolved on this device), ``prefix_hits`` (prompts whose system turn came from the
        cache), ``prefixes_cached`` (system turns held) and
        ``merged_copy_bytes`` (the merged copy of ``fast.merged``, 0 when none is held)."""
        proc = self.last_processor
        return {"backend": "local", "memory": self.memory_bytes(),
                "linear4bit_modules": _linear4bit_count(self.model),
                "last_decoder": (proc.seconds, proc.calls) if proc is not None else None,
                "fast": asdict(self._fast()), "prefix_hits": self.prefix_hits,
                "prefixes_cached": len(self._prefixes), "merged_copy_bytes": self._merged_bytes()}

    def _merged_bytes(self) -> int:
        merged = self._merged[2] if self._merged is not None else None
        if merged is None:
            return 0
        return _weight_bytes(merged)

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of parameters + buffers: all of them, and the adapters' share.

        The adapters' share is the LoRA matrices plus any ``modules_to_save`` copies (e.g. trained
        embeddings), which PEFT keeps beside the base's own module for every adapter.
        """
        total = _weight_bytes(self.model)
        adapters = sum(p.numel() * p.element_size() for n, p in self.model.named_parameters()
                       if "lora_" in n or ".modules_to_save." in n)
        return {"total": total, "adapters": adapters, "base": total - adapters}


def _weight_bytes(model: Any) -> int:
    """Bytes of ``model``'s parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _linear4bit_count(model: Any) -> int:
    """How many of ``model``'s layers are bitsandbytes 4-bit linears (not counting PEFT's LoRA wrappers
    of them, whose class has the same name)."""
    from engine.merge_4bit import is_4bit

    return sum(is_4bit(m) for m in model.modules())


def batch_bucket(n: int) -> int:
    """The batch size ``n`` prompts are padded to under a static cache: the next power of two."""
    return 1 << max(n - 1, 0).bit_length()


def _free_bytes(device: torch.device) -> int:
    """Memory free for one more copy of the weights on ``device`` (GPU memory, or RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)
