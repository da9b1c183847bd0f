"""The backend seam: who turns prompts into raw texts, and the types it speaks in.

:class:`Backend` is the small protocol the :class:`~engine.core.Engine` needs: render a case's
prompt, generate raw texts (with token counts) for a batch of prompts under a named variant,
constrained or not, name each variant's version, and load or replace adapters. Implementations:
:class:`engine.backends.local.LocalPeftBackend` (transformers + PEFT in this process) and
:class:`engine.backends.openai.OpenAIBackend` (an OpenAI-compatible server: vLLM, or our own
``python -m engine.serve``). This module loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Protocol

from policies import Case

BASE_VARIANT = "base"  # the base model with every adapter disabled
# What Backend.prompt returns and Backend.generate takes: a rendered chat text (local models) or the
# chat messages themselves (a server renders them with its own template).
Prompt = Any


class UnknownVariant(KeyError):
    """A variant name that is neither ``base`` nor a loaded adapter."""

    def __init__(self, name: str, known: list[str]):
        self.name, self.known = name, known
        super().__init__(f"unknown variant {name!r} (loaded: {', '.join(known)})")


class BackendError(RuntimeError):
    """A model server failed (unreachable, timed out, refused the key, answered 5xx); the message names
    the server and the model asked for."""

    def __init__(self, message: str, server: str = "", model: str = "", status: int | None = None):
        self.server, self.model, self.status = server, model, status
        super().__init__(message)


class AdapterLoadError(RuntimeError):
    """An adapter could not be loaded or replaced; the message says why and what to do instead."""


# What adding or swapping an adapter raises when it cannot be loaded: a model server refusing it or
# down, PEFT's OSError / ValueError for a missing or incompatible adapter dir.
ADAPTER_LOAD_ERRORS: tuple[type[Exception], ...] = (AdapterLoadError, BackendError, OSError, ValueError)


@dataclass
class FastPath:
    """Speed options of the local backend; None means "on where it helps": on a GPU, off on the CPU
    (but ``prefix_cache`` on the CPU too when the prompts carry the policy in prose: :meth:`resolve`).

    Each computes the same answers (greedy: identical in tests/engine/test_fast_path.py on the CPU;
    on a GPU, compiled kernels and a prefix computed apart may round differently, which
    scripts/device_check.py counts), except ``merged``, whose weights differ from base + adapter
    by rounding (``engine.merge.verify_merge`` counts the changes). A registry entry sets them with
    ``fast = { ... }`` (:meth:`from_dict`).
    """

    overlap_grammar: bool | None = None  # fill the next grammar mask on a thread while the model runs
    prefix_cache: bool | None = None  # reuse each system turn's keys and values across prompts that share it
    # System turns kept (per variant and adapter version), least recently used dropped. The bundled
    # policy has 30 (6 request types x 5 regions); at Qwen2.5-1.5B's size in bf16 one is ~17 MB.
    prefix_cache_size: int = 32
    static_cache: bool = False  # a static KV cache: transformers compiles the forward pass with it on a GPU
    static_cache_len: int = 2048  # its length in tokens (longer calls grow it): one length, no recompiles
    # With static_cache: pad each batch to the next power of two (its last prompt repeated, the extra
    # answers dropped), so that the batch sizes compiled are at most 1, 2, 4, ..., not every size seen.
    bucket_batches: bool = True
    # With static_cache and prefix_cache: the rows' system turns are copied from the prefix cache into
    # a static cache this backend keeps (one, for the latest batch size) and generate continues it, so
    # the compiled mode skips the turns' prefill too. Opt-in: identical answers on the CPU (tests), not
    # yet run on a GPU, where compile guards and CUDA-graph addresses decide what it is worth.
    static_prefix: bool = False
    # Serve this adapter from a copy of the base with it merged in (one kernel per layer instead of
    # three); the shared base still serves every other variant. Costs one more base in memory, so
    # it is built only when that much is free. Over a 4-bit base the copy is plain, in the compute
    # dtype (NF4 cannot absorb the delta): the NF4 weights as the 4-bit kernels use them plus the
    # delta, at the unquantised model's size, and no bitsandbytes layer is left to hold compiling back.
    merged: str | None = None

    BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {"prefix_cache_size": (1, 256),
                                                     "static_cache_len": (128, 131072)}

    @classmethod
    def from_dict(cls, value: Any, adapters: list[str]) -> FastPath:
        """Options from a registry table; ValueError naming the field when one is unknown or out of bounds.
        ``merged`` must name one of ``adapters``."""
        if not isinstance(value, dict):
            raise ValueError("expected a table like { static_cache = true, merged = \"finetuned\" }")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")
        for key in ("overlap_grammar", "prefix_cache", "static_cache", "bucket_batches", "static_prefix"):
            if key in value and not isinstance(value[key], bool):
                raise ValueError(f"{key}: expected true or false, got {value[key]!r}")
        for key, (low, high) in cls.BOUNDS.items():
            v = value.get(key, low)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError(f"{key}: expected a whole number from {low} to {high}, got {v!r}")
        if "merged" in value and value["merged"] not in adapters:
            names = ", ".join(adapters) or "none"
            got = value["merged"]
            raise ValueError(f"merged: expected one of this model's adapters ({names}), got {got!r}")
        return cls(**value)

    def resolve(self, device: Any, long_prefix: bool = False) -> FastPath:
        """These options with every None decided for ``device`` (a ``torch.device``).

        ``long_prefix``: the system turn is most of each prompt (the policy in prose, ``policy="full"``),
        so reusing it pays on the CPU too: 1.87x batched on a 24M-parameter model in that format, on 2
        cores (README, "Benchmark"). With the embedded default's short turn it does not (0.95x), so
        there it stays off on the CPU.
        """
        on_gpu = device.type == "cuda"
        overlap = on_gpu if self.overlap_grammar is None else self.overlap_grammar
        prefix = (on_gpu or long_prefix) if self.prefix_cache is None else self.prefix_cache
        return replace(self, overlap_grammar=overlap, prefix_cache=prefix)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding knobs. ``temperature == 0`` means greedy (the default: reviews must be reproducible)."""

    max_new_tokens: int = 512  # tokens; a constrained answer that has not closed by then is "truncated"
    temperature: float = 0.0  # 0 = greedy; > 0 samples
    top_p: float = 1.0  # nucleus sampling, only when sampling
    seed: int | None = None  # seeds torch before a sampled batch, for repeatable samples

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


@dataclass(frozen=True)
class Generation:
    """One raw completion and its figures."""

    text: str
    input_tokens: int
    output_tokens: int  # generated tokens up to and including the stop token; padding excluded
    hit_token_limit: bool  # stopped at max_new_tokens, not on a stop token
    grammar_error: str | None = None  # set only if the constrained decoder refused a token


class Backend(Protocol):
    """What the engine needs from a model server, local or remote."""

    @property
    def variants(self) -> list[str]: ...

    def prompt(self, case: Case) -> Prompt: ...

    def prompt_size(self, prompt: Prompt) -> int:
        """How long ``prompt`` is, in the unit this backend pads batches by (tokens for a local model):
        the key the engine orders a call's cases by to cut its batches."""
        ...

    def generate(self, prompts: list[Prompt], variant: str, constrained: bool,
                 settings: GenerationSettings) -> list[Generation]: ...

    def model_version(self, variant: str) -> str: ...

    def add_adapter(self, name: str, path: str, version: str | None = None) -> None: ...

    def replace_adapter(self, name: str, path: str, version: str | None = None) -> None: ...

    def figures(self) -> dict[str, Any]: ...
