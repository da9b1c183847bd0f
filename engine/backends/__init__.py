"""Backends: one module per way of running a model, chosen by the model spec's ``backend`` key.

``base`` holds the :class:`Backend` protocol and its types (no torch); ``local`` runs transformers +
PEFT in this process; ``openai`` talks to an OpenAI-compatible server (vLLM or ``engine.serve``).
Names are imported on first use, so ``from engine.backends import GenerationSettings`` loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_BASE = ("AdapterLoadError", "BASE_VARIANT", "Backend", "BackendError", "FastPath", "Generation",
         "GenerationSettings", "Prompt", "UnknownVariant")
_WHERE = {**dict.fromkeys(_BASE, "engine.backends.base"),
          "LocalPeftBackend": "engine.backends.local", "tie_head_copies": "engine.backends.local",
          "OpenAIBackend": "engine.backends.openai"}
__all__ = ["BASE_VARIANT", "AdapterLoadError", "Backend", "BackendError", "FastPath", "Generation",
           "GenerationSettings", "LocalPeftBackend", "OpenAIBackend", "Prompt", "UnknownVariant",
           "tie_head_copies"]

if TYPE_CHECKING:
    from engine.backends.base import (
        BASE_VARIANT,
        AdapterLoadError,
        Backend,
        BackendError,
        FastPath,
        Generation,
        GenerationSettings,
        Prompt,
        UnknownVariant,
    )
    from engine.backends.local import LocalPeftBackend, tie_head_copies
    from engine.backends.openai import OpenAIBackend


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'engine.backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
