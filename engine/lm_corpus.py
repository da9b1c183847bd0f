"""The language-model corpus of the embedded base model: policy documents + rendered case prompts.

No answers and no decisions tied to a case: the base model stays an untuned baseline. The
documents name every rule id and decision (FINDINGS: a base that has seen the answer's
vocabulary makes the adapter learn much faster). Held-out cases (validation, eval, stress) are
left out by what the model would see of them: their deciding fields and their prompt in the
corpus's format (:mod:`policies.leakage`), whatever their ids and message.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field

from engine.build import IM_END, IM_START
from policies import parse_case
from policies.documents import all_sections
from policies.leakage import FrozenKeys, frozen_keys, resolve_frozen_paths
from policies.prompt import CASE_LAYOUTS, INSTRUCTION_KINDS, POLICY_TEXTS, PromptFormat, build_messages

log = logging.getLogger(__name__)


@dataclass
class CorpusConfig:
    """What the base model reads."""

    n_cases: int = 8000  # rendered case prompts (system + user turns)
    doc_repeats: int = 20  # copies of each policy section (they are few and short)
    prompt_policy: str = "titles"  # the tiny model's prompt format (saved beside the model)
    prompt_instructions: str = "short"
    prompt_max_message_chars: int | None = 0  # the tiny model decides on the structured fields
    prompt_case: str = "fields"  # key=value lines: a third of the JSON's tokens
    prompt_policy_facts: bool = False  # the policy's numbers beside the case's (PromptFormat.policy_facts)
    messages: bool = field(
        default=False,
        metadata={"help": "also read each case's customer message as a text of its own: everyday English "
                          "and the items' names in lower case, which the tokenizer then learns as words"},
    )
    message_after_prompt: bool = field(
        default=False,
        metadata={"help": "with messages: each message follows its own case's prompt in one text, so "
                          "the item named in the prompt comes back in the same context (what an answer "
                          "that names the item must do: copy it), instead of a text apart"},
    )
    exclude: list[str] = field(
        default_factory=lambda: [
            "data/generated/validation.jsonl", "data/generated/eval.jsonl", "data/generated/stress.jsonl",
        ],
        metadata={"help": "JSONL files whose cases (by deciding fields or prompt) the base must never see"},
    )

    def problems(self) -> list[str]:
        """Each setting out of its range, as ``field: value; must be ...`` (none: all good). A held-out
        file that does not exist is a problem: a mistyped path would let the base read those cases."""
        choices = {"prompt_policy": POLICY_TEXTS, "prompt_instructions": INSTRUCTION_KINDS,
                   "prompt_case": CASE_LAYOUTS}  # PromptFormat's own options
        checks = [
            ("n_cases", 0 <= self.n_cases <= 1_000_000, "from 0 to 1000000"),
            ("doc_repeats", 0 <= self.doc_repeats <= 10_000, "from 0 to 10000"),
            *((name, getattr(self, name) in allowed, " or ".join(allowed))
              for name, allowed in choices.items()),
            ("prompt_max_message_chars",
             self.prompt_max_message_chars is None or 0 <= self.prompt_max_message_chars <= 100_000,
             "from 0 to 100000 (or unset)"),
            ("prompt_policy_facts", not self.prompt_policy_facts or self.prompt_case == "fields",
             "false unless prompt_case is fields"),
            ("message_after_prompt", not self.message_after_prompt or self.messages,
             "false unless messages is true"),
        ]
        said = [f"{name}: {getattr(self, name)!r}; must be {rule}" for name, ok, rule in checks if not ok]
        said += [f"exclude: no such file: {p}" for p in self.exclude if not resolve_frozen_paths([p])]
        return said

    def prompt_format(self) -> PromptFormat:
        return PromptFormat.from_dict(
            {
                "policy": self.prompt_policy,
                "instructions": self.prompt_instructions,
                "max_message_chars": self.prompt_max_message_chars,
                "case": self.prompt_case,
                "policy_facts": self.prompt_policy_facts,
            }
        )


def render_turns(messages: list[dict[str, str]]) -> str:
    """Chat turns in the template's layout (engine.build.CHAT_TEMPLATE), without a generation prompt."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def held_out_keys(cfg: CorpusConfig) -> FrozenKeys:
    """Fields and prompt keys (in the corpus's format) of the held-out files that exist."""
    held_out = frozen_keys(cfg.exclude, cfg.prompt_format())
    where = ", ".join(held_out.paths) or "no file"
    log.info("held out of the corpus: %d key(s) from %s", len(held_out), where)
    return held_out


def lm_texts(cfg: CorpusConfig, seed: int) -> list[str]:
    """The shuffled corpus: documents x doc_repeats + n_cases rendered prompts (no answers), none of
    them a held-out case by deciding fields or by prompt (:func:`held_out_keys`), and with
    ``cfg.messages`` those cases' customer messages (after their prompts, with
    ``cfg.message_after_prompt``)."""
    from policies.synth import iter_lm_texts  # the generator's case-only stream

    fmt = cfg.prompt_format()
    held_out = held_out_keys(cfg)
    docs = [section.render() for section in all_sections()] * cfg.doc_repeats
    stream = iter_lm_texts(cfg.n_cases, seed, exclude=held_out.match_case)
    cases = [parse_case(json.loads(text)) for text in stream]
    prompts = [render_turns(build_messages(case, fmt)) for case in cases]
    if cfg.messages and cfg.message_after_prompt:
        prompts = [p + c.message if c.message else p for p, c in zip(prompts, cases, strict=True)]
        messages = []
    else:
        messages = [case.message for case in cases if case.message] if cfg.messages else []
    texts = docs + prompts + messages
    random.Random(seed).shuffle(texts)
    return texts
