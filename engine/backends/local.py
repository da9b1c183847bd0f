"""The in-process backend: transformers + PEFT, one base model loaded once, LoRA adapters on top.

The ``base`` variant runs with every adapter disabled; every other variant is an adapter by name.
``engine.serve`` puts this same backend behind an OpenAI-compatible HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from transformers import LogitsProcessorList

from engine.backends.base import BASE_VARIANT, Generation, GenerationSettings, UnknownVariant
from engine.constrained import AnswerGrammar
from engine.loading import peft_wrapping
from policies import Case
from policies.prompt import PromptFormat, render_prompt

GRAMMAR_CACHE_SIZE = 4  # compiled grammars kept for schemas other than the answer's (engine.serve)


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
    two threads must never interleave.
    """

    def __init__(self, tokenizer: Any, model: Any, prompt_format: PromptFormat | None = None,
                 base_version: str = "base", adapter_versions: dict[str, str] | None = None):
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
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            else:
                with peft_wrapping():
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name,
                                                           is_trainable=False)
            tie_head_copies(self.model)
            self.model.eval()
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
            self.model.delete_adapter(name)
            self.model.load_adapter(path, adapter_name=name, is_trainable=False)
            self.model.delete_adapter(staging)
            tie_head_copies(self.model)
            self.model.eval()
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

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        # The chat template already holds any special tokens; adding more would change the ids.
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self._device()) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    @torch.inference_mode()
    def generate(self, prompts: list[str], variant: str, constrained: bool,
                 settings: GenerationSettings, grammar: AnswerGrammar | None = None) -> list[Generation]:
        """Complete ``prompts`` as one left-padded batch. Out: one :class:`Generation` per prompt, in order.

        ``constrained`` decodes under ``grammar`` (default: the answer schema's). Errors:
        :class:`UnknownVariant`; torch errors (e.g. out of memory) propagate.
        """
        grammar = grammar or self.grammar
        processor = grammar.processor(len(prompts), settings.max_new_tokens) if constrained else None
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
            "eos_token_id": self.stop_ids, "pad_token_id": self.tokenizer.pad_token_id,
            "logits_processor": LogitsProcessorList([processor] if processor else []),
        }
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:  # silence the generation_config's sampling defaults under greedy decoding
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self.lock, self._variant(variant):
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            enc = self._encode(prompts)
            out = self.model.generate(**enc, **kwargs)
            self.last_processor = processor
        new_tokens = out[:, enc["input_ids"].shape[1]:].cpu()
        input_counts = enc["attention_mask"].sum(dim=1).tolist()
        errors = processor.errors if processor else [None] * len(prompts)
        rows = zip(new_tokens, input_counts, errors, strict=True)
        return [self._one(row, n_in, err) for row, n_in, err in rows]

    def _one(self, row: torch.Tensor, n_in: int, grammar_error: str | None) -> Generation:
        ids = row.tolist()
        stop_at = next((i for i, t in enumerate(ids) if t in self.stop_ids), None)
        kept = ids if stop_at is None else ids[:stop_at]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        n_out = len(ids) if stop_at is None else stop_at + 1
        return Generation(text=text, input_tokens=int(n_in), output_tokens=n_out,
                          hit_token_limit=stop_at is None, grammar_error=grammar_error)

    def figures(self) -> dict[str, Any]:
        """``backend``, ``memory`` (:meth:`memory_bytes`), ``linear4bit_modules`` and ``last_decoder``."""
        proc = self.last_processor
        return {"backend": "local", "memory": self.memory_bytes(),
                "linear4bit_modules": sum(type(m).__name__ == "Linear4bit" for m in self.model.modules()),
                "last_decoder": (proc.seconds, proc.calls) if proc is not None else None}

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of parameters + buffers: all of them, and the adapters' share.

        The adapters' share is the LoRA matrices plus any ``modules_to_save`` copies (e.g. trained
        embeddings), which PEFT keeps beside the base's own module for every adapter.
        """
        total = sum(p.numel() * p.element_size() for p in self.model.parameters())
        total += sum(b.numel() * b.element_size() for b in self.model.buffers())
        adapters = sum(p.numel() * p.element_size() for n, p in self.model.named_parameters()
                       if "lora_" in n or ".modules_to_save." in n)
        return {"total": total, "adapters": adapters, "base": total - adapters}
