"""The engine runs models: prompts, constrained generation, answer extraction and the guard."""

from engine.backends import Backend, Generation, GenerationSettings, LocalPeftBackend, UnknownVariant
from engine.core import Engine
from engine.extract import Extraction, extract_answer
from engine.guard import guard
from engine.types import GuardVerdict, ModelAnswer

__all__ = [
    "Backend", "Engine", "Extraction", "Generation", "GenerationSettings", "GuardVerdict", "LocalPeftBackend",
    "ModelAnswer", "UnknownVariant", "extract_answer", "guard",
]
