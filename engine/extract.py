"""Turn a model's raw text into a validated answer, or a clear reason why not.

Constrained decoding makes the text exactly one compact JSON object; unconstrained models write
whatever they like: a fenced ```json block, prose before or after, a second object, or an answer
cut off at ``max_new_tokens``. :func:`extract_answer` finds the first balanced JSON object (braces
inside strings do not count), parses it, and validates it with :func:`policies.parse_answer`. It
never raises: the outcome is a :class:`Extraction` whose ``status`` is ``ok``, ``invalid`` or
``truncated`` with the error in words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engine.types import AnswerStatus
from policies import InvalidAnswer, parse_answer

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)


@dataclass(frozen=True)
class Extraction:
    """The outcome of reading one raw text: ``answer`` is set only when ``status == "ok"``."""

    status: AnswerStatus
    answer: dict[str, Any] | None
    error: str | None
    json_text: str | None  # the JSON object found in the text, if any


def first_json_object(text: str) -> tuple[str | None, bool]:
    """The first balanced ``{...}`` in ``text`` and whether one was closed.

    Returns ``(object_text, True)`` for a closed object, ``(rest_from_first_brace, False)`` when an
    object opens but never closes (a truncated answer), ``(None, False)`` when there is no ``{``.
    Braces and quotes inside JSON strings (with escapes) are skipped correctly.
    """
    start = text.find("{")
    if start < 0:
        return None, False
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1], True
    return text[start:], False


def _candidates(text: str) -> list[str]:
    """Texts to search, best first: the inside of each ```json fence, then the whole text."""
    return [m.group(1) for m in _FENCE.finditer(text)] + [text]


def extract_answer(text: str, hit_token_limit: bool = False) -> Extraction:
    """Find, parse and validate the answer in ``text``.

    ``hit_token_limit``: generation stopped at ``max_new_tokens`` rather than on a stop token. An
    unclosed object is then ``truncated``; otherwise it is ``invalid``. A closed object that does not
    parse or breaks the answer schema (e.g. an unknown decision) is ``invalid``, with the JSON error
    or the fields at fault in ``error``.
    """
    if not text.strip():
        status: AnswerStatus = "truncated" if hit_token_limit else "invalid"
        return Extraction(status, None, "empty output", None)
    unclosed: str | None = None
    last_error = "no JSON object in the output"
    for candidate in _candidates(text):
        obj_text, closed = first_json_object(candidate)
        if obj_text is None:
            continue
        if not closed:
            unclosed = unclosed or obj_text
            continue
        try:
            data = json.loads(obj_text)
        except json.JSONDecodeError as exc:
            last_error = f"not valid JSON: {exc.msg} at char {exc.pos}"
            continue
        try:
            answer = parse_answer(data)
        except InvalidAnswer as exc:
            return Extraction("invalid", None, f"answer schema: {exc}", obj_text)
        return Extraction("ok", answer.model_dump(mode="json"), None, obj_text)
    if unclosed is not None:
        if hit_token_limit:
            return Extraction("truncated", None, "hit max_new_tokens before the JSON object closed", unclosed)
        return Extraction("invalid", None, "the JSON object never closes", unclosed)
    return Extraction("invalid", None, last_error, None)
