"""The guard: what the rule engine says about a model's answer, and whether it may be auto-sent.

Pure policy, no model: :func:`guard` combines :func:`policies.expected_decision`,
:func:`policies.check` (hard violations), :func:`policies.flags` (reviewer flags) and, for the text an
answer sends out (the customer response and the next action), :func:`policies.facts.misstated_facts`
(flag FACTS_MISSTATED). An answer is auto-sent only when it is valid, carries no violation, raises no
flag and nothing holds it back: its decision must be the rule engine's (a wrong decision that breaks no
hard rule, a cancellation denied that was due, is still wrong), and its sent text must be fit to send
unread (:func:`engine.consistency.sent_text_issues`: the customer response names the item and does not
repeat itself, the next action takes the decision's step, nothing sent is garbled).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.consistency import SENT_TEXT_CODES, sent_text_issues
from engine.types import GuardVerdict, ModelAnswer
from policies import Case, check, expected_decision, flags
from policies.facts import misstated_facts

SENT_FIELDS = ("customer_response", "next_action")  # what reaches the customer or is acted on
# Why a valid answer without violations or flags is not auto-sent, in the order they are reported.
HELD_BACK_CODES: tuple[str, ...] = ("decision_not_expected", *SENT_TEXT_CODES)


def _sent_text(answer: ModelAnswer | Mapping[str, Any] | None) -> dict[str, str]:
    """The :data:`SENT_FIELDS` of an answer that has them (a valid ModelAnswer or an answer dict)."""
    body = answer.answer if isinstance(answer, ModelAnswer) else answer
    if not body:
        return {}
    return {k: v for k in SENT_FIELDS if isinstance(v := body.get(k), str)}


def _decision_of(answer: ModelAnswer | Mapping[str, Any] | None) -> tuple[str | None, bool]:
    """(decision, valid) of a ModelAnswer, an answer dict, or None (no answer)."""
    if answer is None:
        return None, False
    if isinstance(answer, ModelAnswer):
        return answer.decision, answer.status == "ok" and answer.decision is not None
    decision = answer.get("decision")
    return decision, isinstance(decision, str)


def guard(case: Case, answer: ModelAnswer | Mapping[str, Any] | None,
          decisions_of_all_variants: Mapping[str, str | None] | None = None) -> GuardVerdict:
    """The verdict on ``answer`` for ``case``.

    ``answer``: a :class:`ModelAnswer` (valid only when its status is ``ok``), a validated answer
    dict, or None for no usable answer. ``decisions_of_all_variants`` maps each variant compared on
    this case to its decision (None when invalid) and drives MODELS_DISAGREE; omit it for a single
    answer. A valid answer whose customer response or next action misstates the case (a day count, a
    sum, a claim count, a region, a percentage: :func:`policies.facts.misstated_facts`) is flagged
    FACTS_MISSTATED; its reasoning is the reviewers' (the consistency check's ``facts_misstated``), not
    the customer's. A valid answer is held back (``held_back``, :data:`HELD_BACK_CODES`) when its
    decision is not the expected one, and when its sent text is unfit
    (:func:`engine.consistency.sent_text_issues`: the customer response does not name the item or
    repeats a fragment, a next action that does not fit the decision, garbled text); the fields it lacks
    (a bare decision) are not checked. An invalid answer has no violations (there is no decision to
    check) but is never auto-sent. Raises nothing for a validated ``case``.
    """
    expected = expected_decision(case)
    decision, valid = _decision_of(answer)
    violations = tuple(check(case, decision)) if valid and decision is not None else ()
    found = tuple(flags(case, decisions_of_all_variants))
    sent = _sent_text(answer) if valid else {}
    if misstated_facts(case, sent):
        found += ("FACTS_MISSTATED",)  # the last of FLAGS: the order holds
    held = ("decision_not_expected",) if valid and decision != expected.decision else ()
    held += tuple(issue.code for issue in sent_text_issues(case, sent, decision))
    return GuardVerdict(
        expected_decision=expected.decision,
        expected_refs=expected.policy_refs,
        violations=violations,
        flags=found,
        auto_send=valid and not violations and not found and not held,
        held_back=held,
    )
