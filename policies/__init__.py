"""Policies: the case/answer schemas, the policy documents and the deterministic rule engine."""

from policies.documents import PolicySection, applicable_sections, policy_text
from policies.rules import (
    AUTO_LIMIT,
    FLAGS,
    VIOLATION_CODES,
    WARRANTY_DAYS,
    Expected,
    check,
    expected_decision,
    flags,
    return_window,
    statutory_applies,
)
from policies.schema import (
    DECISIONS,
    RULE_IDS,
    Answer,
    Case,
    InvalidAnswer,
    InvalidCase,
    InvalidInput,
    answer_json_schema,
    parse_answer,
    parse_case,
)
from policies.text import TextError, TextRule, clean_text

__all__ = [
    "AUTO_LIMIT", "DECISIONS", "FLAGS", "RULE_IDS", "VIOLATION_CODES", "WARRANTY_DAYS",
    "Answer", "Case", "Expected", "InvalidAnswer", "InvalidCase", "InvalidInput", "PolicySection",
    "TextError", "TextRule", "answer_json_schema", "applicable_sections", "check", "clean_text",
    "expected_decision", "flags",
    "parse_answer", "parse_case", "policy_text", "return_window", "statutory_applies",
]
