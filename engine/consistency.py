"""Whether an answer holds together against its case: the guard rail an approved or corrected answer
passes before it becomes training data (issue 18).

The text check of the evaluation (:func:`text_problems`: the deciding rule cited in the reasoning, the
item named in the customer response, no repeated fragment; :mod:`engine.metrics` reports it) lives
here, and the consistency check makes the same checks with the same functions (``cites_rule``,
``names_item``, ``repeated_fragment``); it adds the checks between the fields and against the rule
engine:

- ``policy_refs`` against the rule engine's (:func:`policies.expected_decision`), against the rule ids
  the reasoning cites, and against the answer's own decision (policy-spec.md section 4: which decision
  each rule gives);
- ``next_action`` against the decision (an approval whose next step closes the request, a denial that
  issues a refund, the spec's tracking for NRC-1 and cancel-instead for RET-1);
- facts the text states that the case or the policy contradicts (:func:`policies.facts.misstated_facts`:
  a day count, a sum of money, a claim count, a region, a percentage);
- text that is not prose: a field whose whole text is a field name, a decision or a rule id
  (``"next_action": "reasoning"``), JSON leaking into the text, stray brackets, mangled rule ids
  (``"not-3:"``).

:func:`consistency_issues` returns the problems found, each a code and a sentence; [] when the answer
is consistent. :func:`sent_text_issues` returns those of the text an answer sends out (the customer
response and the next action) that make it unfit to send unread; the guard holds such answers back
from auto-send. Pure functions of a validated case and answer: no I/O, no model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from policies import DECISIONS, RULE_IDS, Answer, Case, expected_decision, parse_answer
from policies.facts import misstated_facts

# What each deciding rule of policy-spec.md section 4 decides (before LIM-1), request type aside.
RULE_DECISIONS: dict[str, frozenset[str]] = {
    "GEN-1": frozenset({"REQUEST_INFO"}),
    **{rule: frozenset({"ESCALATE"}) for rule in ("FRD-1", "FRD-2", "FRD-3", "NRC-2", "WAR-5", "RET-2")},
    **{rule: frozenset({"APPROVE_CANCELLATION"}) for rule in ("CAN-1", "CAN-2")},
    **{rule: frozenset({"DENY"}) for rule in ("CAN-3", "NRC-1", "WAR-1", "WAR-2", "WAR-3", "WAR-6", "RET-1",
                                               "RET-5", "RET-6", "RET-7", "RET-9", "RET-10")},
    "NRC-3": frozenset({"APPROVE_REFUND"}),
    **{rule: frozenset({"APPROVE_REPLACEMENT"}) for rule in ("WAR-4", "RET-4")},
    **{rule: frozenset({"APPROVE_REFUND", "APPROVE_EXCHANGE"}) for rule in ("RET-3", "RET-8", "RET-12")},
    "RET-11": frozenset({"APPROVE_REFUND_WITH_FEE", "APPROVE_EXCHANGE"}),
}
LIMIT_RULE = "LIM-1"  # applied last: turns a refund above AUTO_LIMIT into ESCALATE

# The codes, in the order they are reported. Three are text_problems' own (same checks).
CONSISTENCY_CODES: tuple[str, ...] = (
    "refs_not_expected", "refs_contradict_decision", "refs_disagree_with_reasoning", "rule_not_cited",
    "item_not_named", "facts_misstated", "next_action_mismatch", "repeated_fragment", "garbled_text",
)
# The codes that hold an answer back from auto-send when its sent text has them (sent_text_issues).
SENT_TEXT_CODES: tuple[str, ...] = ("item_not_named", "next_action_mismatch", "repeated_fragment",
                                     "garbled_text")
ANSWER_FIELDS: tuple[str, ...] = tuple(Answer.model_fields)
PROSE_FIELDS: tuple[str, ...] = ("reasoning", "customer_response", "next_action")

# next_action: (the step, words one of which names it) per decision, case aside. DENY has none: a
# denial's next step varies (explain, share tracking, close, offer to cancel).
# (Words a real model uses too: "reimburse", "money back", "void the order", "ask for photos".)
_REFUND = re.compile(r"\b(refund|reimburs|money back)", re.IGNORECASE)
NEXT_ACTION_NEEDS: dict[str, tuple[str, re.Pattern[str]]] = {
    "APPROVE_REFUND": ("a refund", _REFUND),
    "APPROVE_REFUND_WITH_FEE": ("a refund", _REFUND),
    "APPROVE_EXCHANGE": ("an exchange", re.compile(r"\b(exchange|replace|replacement|swap|ship|send)",
                                                   re.IGNORECASE)),
    "APPROVE_REPLACEMENT": ("a replacement", re.compile(r"\b(replace|replacement|ship|send)", re.IGNORECASE)),
    "APPROVE_CANCELLATION": ("a cancellation", re.compile(r"\b(cancel|void)", re.IGNORECASE)),
    "ESCALATE": ("a hand-over", re.compile(r"\b(hand|escalat|supervisor|specialist|fraud|investigat|agent|"
                                           r"review|team|colleague|manager|refer|forward)", re.IGNORECASE)),
    "REQUEST_INFO": ("asking for information", re.compile(
        r"\b(ask|request|confirm|find out|obtain|collect|date|details|information|photo|proof|evidence|"
        r"clarif)", re.IGNORECASE)),
}
# ... and a next step the decision rules out: an approval that closes or denies the request; a denial
# or a request for information that pays out or ships.
_CLOSES = re.compile(r"\b(close the (request|claim|case)|deny|decline|reject)\b", re.IGNORECASE)
_PAYS_OUT = re.compile(r"\b(issue|process|pay|grant|approve)\w*\s+(a\s+|the\s+)?(full\s+)?refund\b|"
                       r"\bship\w*\s+(a\s+|the\s+)?(replacement|exchange)\b|\brefund on receipt\b",
                       re.IGNORECASE)
NEXT_ACTION_RULES_OUT: dict[str, re.Pattern[str]] = {
    **{d: _CLOSES for d in DECISIONS if d.startswith("APPROVE_")},
    "DENY": _PAYS_OUT,
    "REQUEST_INFO": _PAYS_OUT,
}
# The spec's own next actions (section 4): NRC-1 "still on its way: next action is tracking",
# RET-1 "next action: cancel instead".
SPEC_NEXT_ACTIONS: dict[str, tuple[str, re.Pattern[str]]] = {
    "NRC-1": ("tracking", re.compile(r"\btrack", re.IGNORECASE)),
    "RET-1": ("to cancel instead", re.compile(r"\bcancel", re.IGNORECASE)),
}

# Garbled text: JSON of the answer leaking into a field, a bare field name opening a customer-facing
# field ("reasoning warranty delivered."), and a word fused to a rule number ("not-3:").
_JSON_LEAK = re.compile(r"[{}]|\"\s*:|\b(customer_response|next_action|policy_refs)\b")
_FIELD_OPENER = re.compile(rf"^({'|'.join(ANSWER_FIELDS)})\b(?!\s*:)")
# A rule id's shape: letters, a hyphen, one or two digits ("RET-12"); an order number ("O-5512") is not one.
_RULE_LIKE = re.compile(r"(?<![\w-])([A-Za-z]+-\d{1,2})(?!\d)\s*:")
_LIST_MARKER = re.compile(r"(^|\s)(\d{1,2}|[a-z])\)")  # "1) ..." or "a) ..." is a list, not a stray bracket


# --- the text check (evaluation's, engine.metrics; and the parts below build on it) -------------
REPEAT_WORDS = 4  # a run of this many words seen twice in one field is a repeated fragment
_WORD = re.compile(r"[a-z0-9']+")


def repeated_fragment(text: str, n: int = REPEAT_WORDS, name: str = "") -> str | None:
    """The first run of ``n`` words that occurs twice in ``text`` (case and punctuation aside), or
    None. The reference answers never repeat even three words; a looping model repeats many.

    ``name`` (the case's item) counts as one word wherever ``text`` writes it whole, or shortened as
    :func:`names_item` accepts (a run of at least half of a name of three words or more, two at the
    least): a response may name "Sony WH-1000XM5 wireless headphones" twice, or "your WH-1000XM5
    wireless headphones" twice, without repeating itself, and "your Wine case is approved" written
    twice still repeats "your wine case is approved"."""
    words = _WORD.findall(text.lower())
    if len(named := _WORD.findall(name.lower())) > 1:
        words = _as_one_word(words, named, _shortest_naming_run(len(named)))
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            return " ".join(gram)
        seen.add(gram)
    return None


def _shortest_naming_run(n: int) -> int:
    """The fewest of a name's ``n`` words that, in the name's order, still name it (:func:`names_item`):
    all of a name of one or two words; of a longer one, half (rounded up), two at the least."""
    return n if n < 3 else max(2, -(-n // 2))


def _as_one_word(words: list[str], run: list[str], shortest: int) -> list[str]:
    """``words`` with each occurrence of ``run``, or of a piece of it at least ``shortest`` words long,
    replaced by its words joined into one; the longest piece wins."""
    out, i = [], 0
    while i < len(words):
        k = _longest_piece_at(words, i, run, shortest)
        out.append(" ".join(words[i:i + k]) if k else words[i])
        i += k or 1
    return out


def _longest_piece_at(words: list[str], i: int, run: list[str], shortest: int) -> int:
    """The length of the longest piece of ``run`` (at least ``shortest`` words) that ``words`` hold
    from ``i`` on, or 0."""
    best = 0
    for start in range(len(run) - shortest + 1):
        k = 0
        while start + k < len(run) and i + k < len(words) and words[i + k] == run[start + k]:
            k += 1
        if k >= shortest:
            best = max(best, k)
    return best


def cites_rule(text: str, rule: str) -> bool:
    """Whether ``text`` holds the rule id ``rule`` as a whole id ("RET-1" is not cited by "RET-12")."""
    return re.search(rf"(?<![A-Za-z0-9-]){re.escape(rule)}(?![0-9])", text) is not None


_NAME_WORD = re.compile(r"[^\W_]+")  # a name's words: letters and digits in any script ("e-reader" is two)


def _word_key(word: str) -> str:
    """A word as :func:`names_item` compares it: lower case, singular for the usual English plurals
    ("headphones" -> "headphone", "dresses" -> "dress", "accessories" -> "accessory"; "dress" stays)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def _word_keys(text: str) -> list[str]:
    return [_word_key(w) for w in _NAME_WORD.findall(text.lower())]


def _holds_run(words: list[str], run: list[str]) -> bool:
    n = len(run)
    return any(words[i:i + n] == run for i in range(len(words) - n + 1))


def names_item(case: Case, text: str) -> bool:
    """Whether ``text`` names the case's item: its words in its order, with case, punctuation and
    plurals aside ("your wireless headphone" and "WIRELESS-HEADPHONES" name "Wireless headphones";
    "e-reader" names "E-reader"). A name of three words or more is also named by a run of at least
    half of its words (two at the least), in its own order, as a person shortens a catalogue title:
    "your WH-1000XM5 wireless headphones" names "Sony WH-1000XM5 wireless headphones, black"; "your
    headphones" does not name "Wireless headphones"."""
    item, words = _word_keys(case.order.item), _word_keys(text)
    if not item:  # a name without letters or digits: as written
        return case.order.item.lower() in text.lower()
    # a longer run of the name holds one of this length, so runs of this length are the ones to look for
    size = _shortest_naming_run(len(item))
    return any(_holds_run(words, item[start:start + size]) for start in range(len(item) - size + 1))


def text_problems(case: Case, answer: dict[str, Any]) -> tuple[str, ...]:
    """What the text check finds wrong with a schema-valid ``answer`` to ``case``, in this order:
    ``rule_not_cited`` (the reasoning lacks the deciding rule id), ``item_not_named`` (the customer
    response does not name the item: :func:`names_item`), ``repeated_fragment`` (the reasoning or the customer
    response repeats a run of :data:`REPEAT_WORDS` words). () when it passes."""
    problems = []
    if not cites_rule(answer["reasoning"], expected_decision(case).rule):
        problems.append("rule_not_cited")
    if not names_item(case, answer["customer_response"]):
        problems.append("item_not_named")
    if any(repeated_fragment(answer[key], name=case.order.item)
           for key in ("reasoning", "customer_response")):
        problems.append("repeated_fragment")
    return tuple(problems)


@dataclass(frozen=True)
class ConsistencyIssue:
    """One problem: ``code`` (one of :data:`CONSISTENCY_CODES`) and a sentence a reviewer reads."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyIssue:
        return cls(str(data["code"]), str(data["message"]))


def _ids(refs: Any) -> str:
    return ", ".join(refs) or "none"


def _refs_issues(case: Case, answer: Answer) -> list[ConsistencyIssue]:
    expected = expected_decision(case)
    refs = list(dict.fromkeys(answer.policy_refs))
    out = []
    if set(refs) != set(expected.policy_refs):
        out.append(ConsistencyIssue(
            "refs_not_expected", f"policy_refs cite {_ids(refs)}, but the rule engine decides this case by "
                                 f"{_ids(expected.policy_refs)} ({expected.decision})."))
    deciding = [r for r in refs if r != LIMIT_RULE]
    gives = set().union(*(RULE_DECISIONS[r] for r in deciding)) if deciding else set()
    if not deciding:
        why = "name no deciding rule"
    elif LIMIT_RULE in refs and answer.decision != "ESCALATE":
        why = f"cite {LIMIT_RULE}, which escalates, not {answer.decision}"
    elif LIMIT_RULE in refs and not gives & {"APPROVE_REFUND", "APPROVE_REFUND_WITH_FEE"}:
        why = f"cite {LIMIT_RULE}, but none of {_ids(deciding)} gives a refund for it to escalate"
    elif LIMIT_RULE not in refs and answer.decision not in gives:
        why = f"cite {_ids(deciding)}, which give {_ids(sorted(gives))}, not {answer.decision}"
    else:
        why = ""
    if why:
        out.append(ConsistencyIssue("refs_contradict_decision", f"policy_refs {why}."))
    cited = [r for r in RULE_IDS if cites_rule(answer.reasoning, r)]
    unlisted, uncited = [r for r in cited if r not in refs], [r for r in refs if r not in cited]
    if unlisted or uncited:
        parts = [f"policy_refs list {_ids(uncited)}, which the reasoning does not cite"] if uncited else []
        if unlisted:
            parts.append(f"the reasoning cites {_ids(unlisted)}, which policy_refs do not list")
        out.append(ConsistencyIssue("refs_disagree_with_reasoning", "; ".join(parts) + "."))
    return out


def _next_action_issue(case: Case, decision: str, text: str) -> ConsistencyIssue | None:
    needs, rules_out = NEXT_ACTION_NEEDS.get(decision), NEXT_ACTION_RULES_OUT.get(decision)
    expected = expected_decision(case)
    spec = SPEC_NEXT_ACTIONS.get(expected.rule) if decision == expected.decision else None
    if needs is not None and not needs[1].search(text):
        why = f"does not name the step {decision} takes ({needs[0]})"
    elif rules_out is not None and (found := rules_out.search(text)):
        why = f"says {found.group(0)!r}, which {decision} rules out"
    elif spec is not None and not spec[1].search(text):
        why = f"should be {spec[0]} ({expected.rule}, policy-spec section 4)"
    else:
        return None
    return ConsistencyIssue("next_action_mismatch", f"next_action {text[:60]!r} {why}.")


def _garbled(field: str, text: str, ids: frozenset[str] = frozenset()) -> str | None:
    """Why ``text`` (the answer's ``field``) is not prose, or None. ``ids``: the case's own identifiers
    (case, order, customer), which a text may write before a colon ("Order O-12:")."""
    bare = text.strip().strip(".:;,!? ").casefold()
    if bare in ANSWER_FIELDS or bare.upper() in DECISIONS or bare.upper() in RULE_IDS:
        return f"is just {text.strip()!r}"
    if (leak := _JSON_LEAK.search(text)) is not None:
        return f"holds answer JSON ({leak.group(0)!r})"
    if field != "reasoning" and (opener := _FIELD_OPENER.match(text.strip())) is not None:
        return f"opens with the field name {opener.group(1)!r}"
    if (fused := next((m.group(1) for m in _RULE_LIKE.finditer(text)
                       if m.group(1) not in RULE_IDS and m.group(1) not in ids), None)):
        return f"holds {fused!r}, not a rule id"
    prose = _LIST_MARKER.sub(" ", text)
    if prose.count("(") != prose.count(")") or prose.count("[") != prose.count("]"):
        return "has unmatched brackets"
    return None


def _item_issue(case: Case, response: str) -> ConsistencyIssue | None:
    if names_item(case, response):
        return None
    return ConsistencyIssue("item_not_named",
                            f"The customer response does not name the item ({case.order.item}).")


def _repeat_issue(case: Case, texts: Mapping[str, str]) -> ConsistencyIssue | None:
    found = [(k, frag) for k, text in texts.items()
             if (frag := repeated_fragment(text, name=case.order.item))]
    if not found:
        return None
    where = "; ".join(f"{k} repeats {frag!r}" for k, frag in found)
    return ConsistencyIssue("repeated_fragment", f"Repeated text: {where}.")


def _garbled_issue(case: Case, texts: Mapping[str, str]) -> ConsistencyIssue | None:
    ids = frozenset({case.case_id, case.order.id, case.customer.id})
    garbled = [f"{k} {why}" for k, text in texts.items() if (why := _garbled(k, text, ids))]
    if not garbled:
        return None
    return ConsistencyIssue("garbled_text", f"Garbled text: {'; '.join(garbled)}.")


def _text_issues(case: Case, answer: Answer) -> list[ConsistencyIssue]:
    body = answer.model_dump(mode="json")
    out = []
    if not cites_rule(answer.reasoning, expected_decision(case).rule):
        out.append(ConsistencyIssue("rule_not_cited", f"The reasoning does not cite "
                                                      f"{expected_decision(case).rule}, the deciding rule."))
    out.append(_item_issue(case, answer.customer_response))
    out.append(_repeat_issue(case, {k: body[k] for k in ("reasoning", "customer_response")}))
    if misstated := misstated_facts(case, body):
        out.append(ConsistencyIssue("facts_misstated", f"Misstated facts: {'; '.join(map(str, misstated))}."))
    out.append(_garbled_issue(case, {k: body[k] for k in PROSE_FIELDS}))
    return [issue for issue in out if issue is not None]


def sent_text_issues(case: Case, sent: Mapping[str, str],
                     decision: str | None = None) -> list[ConsistencyIssue]:
    """The problems of the text an answer sends out, ``sent`` (its ``customer_response`` and
    ``next_action``, either may be absent), that make it unfit to send unread, in
    :data:`CONSISTENCY_CODES` order: the customer response does not name the item, the next action does
    not take the step ``decision`` takes (or one it rules out; not checked without a decision), the
    response repeats a fragment, or either field is garbled (:data:`SENT_TEXT_CODES`). [] when it is
    fit. The guard holds such an answer back from auto-send (:func:`engine.guard.guard`); misstated
    facts are its flag FACTS_MISSTATED, not an issue here."""
    response, action = sent.get("customer_response"), sent.get("next_action")
    found = [] if response is None else [_item_issue(case, response),
                                         _repeat_issue(case, {"customer_response": response})]
    if action is not None and decision is not None:
        found.append(_next_action_issue(case, decision, action))
    found.append(_garbled_issue(case, {k: sent[k] for k in PROSE_FIELDS if k in sent}))
    return sorted((i for i in found if i is not None), key=lambda issue: CONSISTENCY_CODES.index(issue.code))


def consistency_issues(case: Case, answer: Answer | Mapping[str, Any]) -> list[ConsistencyIssue]:
    """The problems of ``answer`` (an :class:`Answer`, or a dict valid for :func:`policies.parse_answer`)
    as an answer to ``case``, in :data:`CONSISTENCY_CODES` order; [] when it is consistent.

    Raises :class:`policies.InvalidAnswer` for a dict that is not a valid answer.
    """
    if not isinstance(answer, Answer):
        answer = parse_answer(dict(answer))
    found = _refs_issues(case, answer) + _text_issues(case, answer)
    if (action := _next_action_issue(case, answer.decision, answer.next_action)) is not None:
        found.append(action)
    return sorted(found, key=lambda issue: CONSISTENCY_CODES.index(issue.code))
