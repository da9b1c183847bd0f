"""The copy probe: can a model copy the item's name from the case into its customer response, the
case's day count into its reasoning (``target="days"``: "29 days since delivery", the facts check's
``days``), or the case's region into its reasoning (``target="region"``: "in UK", "the UK AUTO_LIMIT",
the facts check's ``region``)?

Teacher-forced on reference answers (the model reads the prompt and the reference answer, and each
next token is compared with the model's first choice): the share of the item's tokens inside the
customer response it predicts, against the share of the response's other tokens. A model that has
learnt the response's template but cannot copy from its prompt scores high on the second and low on
the first, which is what the text check's ``item_not_named`` looks like from the inside. No generation,
no grammar: it measures the model, not the decoding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from engine.sft_data import DatasetError, read_rows
from policies import Answer, Case, InvalidInput, parse_answer, parse_case
from policies.facts import region_statements
from policies.prompt import PromptFormat, answer_json, render_prompt

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CopyProbe:
    """Teacher-forced next-token accuracy inside the customer response (counts over every row read)."""

    rows: int  # rows whose customer response names the item (the others are skipped)
    item_tokens: int
    item_correct: int
    item_first_correct: int  # rows whose item's first token was predicted
    other_tokens: int  # the response's tokens outside the item
    other_correct: int

    @property
    def item_accuracy(self) -> float:
        return self.item_correct / max(self.item_tokens, 1)

    @property
    def other_accuracy(self) -> float:
        return self.other_correct / max(self.other_tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "item_accuracy": round(self.item_accuracy, 4),
                "item_first_accuracy": round(self.item_first_correct / max(self.rows, 1), 4),
                "other_accuracy": round(self.other_accuracy, 4)}


def read_answered_rows(path: str | Path, max_rows: int | None = None) -> list[tuple[Case, Answer]]:
    """(case, reference answer) per line of a generator JSONL file (the first ``max_rows``);
    :class:`engine.sft_data.DatasetError` names a missing or empty file and a bad line."""

    def convert(row: Any, p: Path, line: int) -> tuple[Case, Answer]:
        try:
            return parse_case(row["input"]), parse_answer(row["output"])
        except (KeyError, TypeError, InvalidInput) as exc:
            raise DatasetError(p, line, f"not a row with input and a whole output ({exc})") from None

    return read_rows(path, convert, "the dataset is empty")[:max_rows]


def item_span(response_start: int, response: str, item: str) -> tuple[int, int] | None:
    """Character span of ``item`` (case aside) inside the response that starts at ``response_start``."""
    at = response.lower().find(item.lower())
    return None if at < 0 else (response_start + at, response_start + at + len(item))


COPY_TARGETS = ("item", "days", "region")  # what copy_probe follows: the item in the customer response,
#                                            the day count or the region in the reasoning


def _target(case: Case, answer: Answer, target: str) -> tuple[str, tuple[int, int]] | None:
    """(the answer field to score, the span inside it to copy) for ``target``; None when the reference
    answer does not state it (no item named; a case without a day count; no region said of the case)."""
    if target == "item":
        span = item_span(0, answer.customer_response, case.order.item)
        return None if span is None else (answer.customer_response, span)
    if target == "region":  # "in UK", "the UK AUTO_LIMIT": as the facts check reads it, not "UK/EU"
        spans = [said.span for said in region_statements(answer.reasoning) if said.region == case.region]
        return (answer.reasoning, spans[0]) if spans else None
    days = case.order.days_since_delivery
    at = -1 if days is None else answer.reasoning.find(f"{days} days")  # the digits, not "RET-3"'s 3
    return None if at < 0 else (answer.reasoning, (at, at + len(str(days))))


def _score(
    model: Any, tokenizer: Any, full: str, region: tuple[int, int], span: tuple[int, int]
) -> tuple[list[bool], list[bool]]:
    """Teacher-force ``full``; out: (first choices right on the item's tokens, on the region's other
    tokens), each a list of booleans. A token belongs to the item when its characters, the spaces around
    them aside, lie inside ``span`` (" wireless" is the item's first token in "your wireless
    headphones"; the "." after it is not), to the region when they lie inside ``region``."""
    enc = tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    ids = torch.tensor([enc["input_ids"]], device=next(model.parameters()).device)
    with torch.no_grad():
        right = (model(ids).logits[0, :-1].argmax(-1) == ids[0, 1:]).tolist()  # right[i-1]: token i
    in_item, rest = [], []
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        text = full[s:e]
        s, e = s + len(text) - len(text.lstrip()), s + len(text.rstrip())  # the characters, not the spaces
        if i == 0 or e <= s or s < region[0] or e > region[1]:
            continue
        (in_item if s >= span[0] and e <= span[1] else rest).append(right[i - 1])
    return in_item, rest


def _tally(scored: list[tuple[list[bool], list[bool]]]) -> CopyProbe:
    return CopyProbe(rows=len(scored), item_tokens=sum(len(i) for i, _ in scored),
                     item_correct=sum(sum(i) for i, _ in scored),
                     item_first_correct=sum(bool(i and i[0]) for i, _ in scored),
                     other_tokens=sum(len(r) for _, r in scored),
                     other_correct=sum(sum(r) for _, r in scored))


def copy_probe(model: Any, tokenizer: Any, fmt: PromptFormat, rows: Sequence[tuple[Case, Answer]],
               progress: Progress | None = None, target: str = "item") -> CopyProbe:
    """Teacher-force each reference answer after its prompt (built by the one prompt function) and count
    the model's first choices on the ``target``'s tokens (:data:`COPY_TARGETS`: the item in the customer
    response, the case's day count or its region in the reasoning) and on the rest of that field (the
    ``item_*`` counts hold the target's). Rows whose reference answer does not state the target are skipped.
    ValueError for an unknown ``target``."""
    if target not in COPY_TARGETS:
        raise ValueError(f"target: expected one of {', '.join(COPY_TARGETS)}, got {target!r}")
    scored = []
    for done, (case, answer) in enumerate(rows, 1):
        prompt = render_prompt(tokenizer, case, fmt)
        full = prompt + answer_json(answer)
        found = _target(case, answer, target)
        start = full.find(found[0], len(prompt)) if found else -1
        if found and start >= 0:
            text, (a, b) = found
            scored.append(_score(model, tokenizer, full, (start, start + len(text)), (start + a, start + b)))
        if progress:
            progress(done, len(rows))
    return _tally(scored)


def message_copy_probe(model: Any, tokenizer: Any, fmt: PromptFormat, cases: Sequence[Case],
                       progress: Progress | None = None) -> CopyProbe:
    """The same count for a base LM, which writes no answers: each case's prompt turns (as the base's
    corpus renders them) followed by the customer's message, and the item's tokens in the message
    against the message's other tokens. Cases whose message does not name the item are skipped."""
    from engine.lm_corpus import render_turns
    from policies.prompt import build_messages

    scored = []
    for done, case in enumerate(cases, 1):
        prompt = render_turns(build_messages(case, fmt))
        full = prompt + (case.message or "")
        span = item_span(len(prompt), case.message or "", case.order.item)
        if span is not None:
            scored.append(_score(model, tokenizer, full, (len(prompt), len(full)), span))
        if progress:
            progress(done, len(cases))
    return _tally(scored)


def load_scored_model(model_name: str) -> tuple[Any, Any, PromptFormat]:
    """(model, tokenizer, prompt format) of a registry name or model / adapter dir, in fp32 for
    teacher forcing: the base with the spec's ``finetuned`` adapter on top when it has one."""
    from peft import PeftModel

    from engine.loading import load_base_model, load_tokenizer, peft_wrapping
    from engine.registry import resolve_model

    spec = resolve_model(model_name)
    adapter = spec.adapters.get("finetuned")
    model = load_base_model(spec, quantize="none", dtype="fp32")
    if adapter:
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, adapter).eval()
    return model, load_tokenizer(adapter or spec.base), spec.prompt_format
