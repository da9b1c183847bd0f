"""Result types the engine hands to the console, the store and the scripts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# ok: a schema-valid answer. invalid: no parseable/valid answer (never auto-sent).
# truncated: generation hit max_new_tokens before the answer closed (also never auto-sent).
AnswerStatus = Literal["ok", "invalid", "truncated"]


class DatasetError(ValueError):
    """A dataset file or line is unusable; the message names the file and line (0: the file itself) and
    the field. One class for every reader: training rows (``engine.sft_data``), preference rows
    (``engine.dpo``), labelled cases for evaluation (``engine.metrics``) and the probes."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path, self.line = str(path), line
        super().__init__(f"{path}:{line}: {message}")


@dataclass(frozen=True)
class GuardVerdict:
    """What the rule engine says about one answer."""

    expected_decision: str
    expected_refs: tuple[str, ...]
    violations: tuple[str, ...]  # hard-violation codes of the proposed decision
    flags: tuple[str, ...]  # reviewer flags
    auto_send: bool  # True only for a valid answer with no violation, no flag and nothing held back
    # Why a valid answer is held back besides violations and flags (engine.guard.HELD_BACK_CODES): its
    # decision is not the rule engine's, or its sent text is unfit (engine.consistency.SENT_TEXT_CODES)
    held_back: tuple[str, ...] = ()

    @property
    def needs_human(self) -> bool:
        return not self.auto_send


@dataclass(frozen=True)
class ModelAnswer:
    """One model answer to one case, with its figures and the guard's verdict."""

    case_id: str
    variant: str  # "base", or the adapter name (e.g. "finetuned", "ft-v2")
    model_version: str  # base model id/path + adapter version, e.g. "default-base@1+ft-v1"
    status: AnswerStatus
    raw_text: str
    answer: dict[str, Any] | None  # the validated answer, None unless status == "ok"
    error: str | None
    latency_s: float
    input_tokens: int
    output_tokens: int
    truncated: bool
    guard: GuardVerdict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> str | None:
        return self.answer["decision"] if self.answer else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
