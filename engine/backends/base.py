"""The backend seam: who turns prompts into raw texts, and the types it speaks in.

:class:`Backend` is the small protocol the :class:`~engine.core.Engine` needs: render a case's
prompt, generate raw texts (with token counts) for a batch of prompts under a named variant,
constrained or not, name each variant's version, and load or replace adapters. Implementations:
:class:`engine.backends.local.LocalPeftBackend` (transformers + PEFT in this process) and
:class:`engine.backends.openai.OpenAIBackend` (an OpenAI-compatible server: vLLM, or our own
``python -m engine.serve``). This module loads no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

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

    def generate(self, prompts: list[Prompt], variant: str, constrained: bool,
                 settings: GenerationSettings) -> list[Generation]: ...

    def model_version(self, variant: str) -> str: ...

    def add_adapter(self, name: str, path: str, version: str | None = None) -> None: ...

    def replace_adapter(self, name: str, path: str, version: str | None = None) -> None: ...

    def figures(self) -> dict[str, Any]: ...
