"""The language-model corpus of the embedded base model: policy documents + rendered case prompts.

No answers and no decisions tied to a case: the base model stays an untuned baseline. The
documents name every rule id and decision (FINDINGS: a base that has seen the answer's
vocabulary makes the adapter learn much faster).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from engine.build import IM_END, IM_START
from policies import parse_case
from policies.documents import all_sections
from policies.prompt import PromptFormat, build_messages


@dataclass
class CorpusConfig:
    """What the base model reads."""

    n_cases: int = 8000  # rendered case prompts (system + user turns)
    doc_repeats: int = 20  # copies of each policy section (they are few and short)
    prompt_policy: str = "titles"  # the tiny model's prompt format (saved beside the model)
    prompt_instructions: str = "short"
    prompt_max_message_chars: int | None = 0  # the tiny model decides on the structured fields
    prompt_case: str = "fields"  # key=value lines: a third of the JSON's tokens
    exclude: list[str] = field(
        default_factory=lambda: ["data/generated/validation.jsonl", "data/generated/eval.jsonl"],
        metadata={"help": "JSONL files whose cases (by message) the base must never see"},
    )

    def prompt_format(self) -> PromptFormat:
        return PromptFormat.from_dict(
            {
                "policy": self.prompt_policy,
                "instructions": self.prompt_instructions,
                "max_message_chars": self.prompt_max_message_chars,
                "case": self.prompt_case,
            }
        )


def render_turns(messages: list[dict[str, str]]) -> str:
    """Chat turns in the template's layout (engine.build.CHAT_TEMPLATE), without a generation prompt."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def held_out_messages(paths: list[str]) -> set[str]:
    """Customer messages of the held-out files that exist (missing files are skipped)."""
    out: set[str] = set()
    for path in paths:
        if Path(path).is_file():
            with open(path, encoding="utf-8") as fh:
                out.update(json.loads(line)["input"]["message"] for line in fh if line.strip())
    return out


def lm_texts(cfg: CorpusConfig, seed: int) -> list[str]:
    """The shuffled corpus: documents x doc_repeats + n_cases rendered prompts (no answers)."""
    from policies.synth import iter_lm_texts  # the generator's case-only stream

    fmt = cfg.prompt_format()
    docs = [section.render() for section in all_sections()] * cfg.doc_repeats
    prompts = [
        render_turns(build_messages(parse_case(json.loads(text)), fmt))
        for text in iter_lm_texts(cfg.n_cases, seed, exclude_messages=held_out_messages(cfg.exclude))
    ]
    texts = docs + prompts
    random.Random(seed).shuffle(texts)
    return texts
