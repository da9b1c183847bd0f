"""The engine runs models: backends, constrained generation, answer extraction and the guard.

``import engine`` is cheap: the names below are imported on first use, so code that needs only the
engine's types (``engine.types``) or the guard never loads torch. Heavy modules (backends, core,
constrained, loading, training) import torch themselves, where they run a model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import engine.quiet  # noqa: F401  (drops a library notice nobody can act on, before any library logs it)

_WHERE = {
    "Backend": "engine.backends.base", "BackendError": "engine.backends.base",
    "Generation": "engine.backends.base", "GenerationSettings": "engine.backends.base",
    "UnknownVariant": "engine.backends.base",
    "LocalPeftBackend": "engine.backends.local", "OpenAIBackend": "engine.backends.openai",
    "Engine": "engine.core",
    "Extraction": "engine.extract", "extract_answer": "engine.extract",
    "guard": "engine.guard",
    "GuardVerdict": "engine.types", "ModelAnswer": "engine.types",
}
__all__ = [
    "Backend", "BackendError", "Engine", "Extraction", "Generation", "GenerationSettings", "GuardVerdict",
    "LocalPeftBackend", "ModelAnswer", "OpenAIBackend", "UnknownVariant", "extract_answer", "guard",
]

if TYPE_CHECKING:
    from engine.backends.base import Backend, BackendError, Generation, GenerationSettings, UnknownVariant
    from engine.backends.local import LocalPeftBackend
    from engine.backends.openai import OpenAIBackend
    from engine.core import Engine
    from engine.extract import Extraction, extract_answer
    from engine.guard import guard
    from engine.types import GuardVerdict, ModelAnswer


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
