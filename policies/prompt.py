"""The one prompt builder, shared by training, inference, evaluation and export.

A prompt is the model's own chat template over two turns: a system turn with the
instructions and the policy sections that apply to the case, and a user turn with the case
as compact JSON. Training appends the answer as the assistant turn (:func:`build_messages`
with ``answer=``); inference renders the same turns with a generation prompt
(:func:`render_prompt`). Nothing else in the project formats a prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from policies.documents import applicable_sections
from policies.rules import AUTO_LIMIT, WARRANTY_DAYS, return_window
from policies.schema import Answer, Case

INSTRUCTIONS = (
    "You decide e-commerce customer-service cases by the policy below. Check the rules in order; "
    "the first that applies decides. Answer with one JSON object: "
    '{"decision": one of APPROVE_REFUND, APPROVE_REFUND_WITH_FEE, APPROVE_EXCHANGE, APPROVE_REPLACEMENT, '
    'APPROVE_CANCELLATION, DENY, ESCALATE, REQUEST_INFO; "policy_refs": the deciding rule id, plus LIM-1 '
    'where it applied; "next_action": what happens next; "reasoning": why, citing rule ids; '
    '"customer_response": a polite, empathetic message to the customer}.'
)
# For tiny embedded models: they learn the answer's shape from data, and every prompt token
# costs CPU training time.
SHORT_INSTRUCTIONS = "Decide the case by the policy. Answer with one JSON object."

# The case's structured fields come first and the free-text message last, so the deciding
# fields sit at fixed, short distances from the start of the user turn.
_CASE_KEY_ORDER = ("case_id", "region", "request_type", "reason", "customer", "order", "message")


PolicyText = Literal["full", "titles"]
Instructions = Literal["full", "short"]
CaseLayout = Literal["json", "fields"]
POLICY_TEXTS: tuple[str, ...] = get_args(PolicyText)  # the values each option takes, for the checks
INSTRUCTION_KINDS: tuple[str, ...] = get_args(Instructions)
CASE_LAYOUTS: tuple[str, ...] = get_args(CaseLayout)


@dataclass(frozen=True)
class PromptFormat:
    """How much policy text goes into the system turn.

    ``policy="full"``: the applicable policy sections in prose (real models).
    ``policy="titles"``: only the titles of the applicable sections (tiny embedded models, whose
    context and CPU training budget cannot carry the prose; they learn the rules from data).
    ``instructions="short"``: a one-line instruction instead of the full one (tiny models).
    ``max_message_chars``: cut the customer's message to this many characters (tiny models,
    whose decisions rest on the structured fields); None keeps it whole.
    ``case="fields"``: the case as ``key=value`` lines instead of JSON, ids left out, the
    (cut) message last (tiny models: a third of the tokens, the same facts).
    ``policy_facts`` (``case="fields"`` only): the policy's numbers for this case beside the facts
    they bound, ``auto_limit`` after the price and ``return_window_days`` and ``warranty_days``
    after the day count (the region's AUTO_LIMIT, the category's and tier's RETURN_WINDOW, the
    region's WARRANTY_DAYS): a tiny model then compares two numbers on neighbouring lines
    instead of recalling a table. Facts only, never a rule's outcome ("over the limit").
    The format an adapter was trained with is saved beside it and reused at inference.
    """

    policy: PolicyText = "full"
    instructions: Instructions = "full"
    max_message_chars: int | None = None
    case: CaseLayout = "json"
    policy_facts: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PromptFormat:
        return cls(**(data or {}))


def system_prompt(case: Case, fmt: PromptFormat = PromptFormat()) -> str:
    sections = applicable_sections(case)
    if fmt.policy == "full":
        policy = "\n\n".join(s.render() for s in sections)
    else:
        policy = "Policy sections: " + "; ".join(s.title for s in sections) + "."
    instructions = INSTRUCTIONS if fmt.instructions == "full" else SHORT_INSTRUCTIONS
    return f"{instructions}\n\n{policy}"


def case_json(case: Case, fmt: PromptFormat = PromptFormat()) -> str:
    """The case as compact JSON, structured fields first and the message last (cut per ``fmt``)."""
    data = case.model_dump(mode="json")
    ordered = {key: data[key] for key in _CASE_KEY_ORDER}
    if fmt.max_message_chars is not None:
        ordered["message"] = ordered["message"][: fmt.max_message_chars]
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def case_fields(case: Case, fmt: PromptFormat = PromptFormat()) -> str:
    """The case as ``key=value`` lines: the deciding fields plus item and currency (the answer names them)."""
    data = case.model_dump(mode="json")
    flat = {**{k: data[k] for k in ("region", "request_type", "reason")},
            "tier": data["customer"]["tier"], "claims_last_12m": data["customer"]["claims_last_12m"],
            **{k: v for k, v in data["order"].items() if k != "id"}}
    if fmt.policy_facts:
        flat = _with_policy_facts(case, flat)
    lines = [f"{key}={_field_text(value)}" for key, value in flat.items()]
    message = data["message"] if fmt.max_message_chars is None else data["message"][: fmt.max_message_chars]
    if message:
        lines.append(f"message={message}")
    return "\n".join(lines)


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _field_text(value: Any) -> str:
    """A field's value as a ``key=value`` line writes it: its JSON without the quotes of a string
    (``json.dumps(value, ensure_ascii=False).strip('"')``, which it equals; the usual strings, numbers and
    flags without calling the encoder, since every prompt of a training pool is rendered this way)."""
    if isinstance(value, str) and not _NEEDS_ESCAPE.search(value):
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False).strip('"')


def _with_policy_facts(case: Case, flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with the policy's numbers for ``case`` inserted after the fields they bound."""
    after = {"price": {"auto_limit": AUTO_LIMIT[case.region]},
             "days_since_delivery": {"return_window_days": return_window(case),
                                     "warranty_days": WARRANTY_DAYS[case.region]}}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        out[key] = value
        out.update(after.get(key, {}))
    return out


def answer_json(answer: Answer) -> str:
    """The answer as the model writes it: compact JSON, fields in schema order."""
    return json.dumps(answer.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def build_messages(case: Case, fmt: PromptFormat = PromptFormat(),
                   answer: Answer | None = None) -> list[dict[str, str]]:
    """Chat turns for ``case``; with ``answer``, the assistant turn too (a training example)."""
    messages = [
        {"role": "system", "content": system_prompt(case, fmt)},
        {"role": "user", "content": case_json(case, fmt) if fmt.case == "json" else case_fields(case, fmt)},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer_json(answer)})
    return messages


def render_prompt(tokenizer: Any, case: Case, fmt: PromptFormat = PromptFormat()) -> str:
    """The inference prompt: the chat template over :func:`build_messages` plus the generation prompt."""
    messages = build_messages(case, fmt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
