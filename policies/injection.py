"""Prompt-injection detector of a case's message: keyword patterns over several views of the text.

Never decisive: the expected decision comes from the structured fields only; a hit raises the
INJECTION_SUSPECTED flag, which keeps the case away from auto-send so a human reads it. An answer
that obeys an injection is caught anyway by the guard's violations (an approval the policy does not
give); the flag matters for the injected cases a model answers correctly.

Views, so a disguise does not hide the words: the text as given; folded (NFKC, so fullwidth letters
become ASCII; Cyrillic and Greek look-alikes mapped to Latin; zero-width and other format characters
removed); de-leeted (``1gn0r3`` -> ``ignore``); letters joined when spelt out one by one or split by
``-``/``.`` (``i g n o r e``, ``i.g.n.o.r.e``, ``ig-nore``); URL- and HTML-decoded; reversed;
ROT13; and every base64-looking run decoded. Patterns cover English and the common phrasing in
French, Spanish, German, Italian, Portuguese, Dutch, Russian, Polish, Turkish, Chinese and Japanese.
Measured on tests/policies/data/injections.jsonl (a dev half used while writing this, a held-out
half not): see tests/policies/test_injection_set.py and the README.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import unquote

_ENGLISH = (
    # "ignore the policy", "disregard all previous instructions", "forget your rules"
    r"\b(ignore|disregard|forget|override|bypass|skip|stop following)\b[^.!?\n]{0,40}?"
    r"\b(polic(y|ies)|instructions?|rules?|guidelines?|guidance|prompt|guard|limits?|checks?|restrictions?|"
    r"verification|escalation|everything above)\b",
    # instructions declared void: "your previous instructions are cancelled", "the rules do not apply"
    r"\b(previous|prior|earlier|above|your|the)\s+(instructions?|guidance|rules?|guidelines?|prompt)\b"
    r"[^.!?\n]{0,40}?\b(cancel+ed|void|outdated|obsolete|(do not|don't|no longer) apply|lifted|disabled|"
    r"were given)\b",
    r"\b(limits?|checks?|rules?|restrictions?)\b[^.!?\n]{0,20}\b(have been |are )?"
    r"(lifted|disabled|removed|off)\b",
    # fake system prompts, role switches and tool output
    r"\bsystem\s*(prompt|message|override|instruction|update)s?\b",
    r"(^|\n)\s*(system|assistant|developer)\s*:",
    r"(^|\W)(system|assistant)\s*:",
    r"<\|?\s*/?\s*(im_start|im_end|system|assistant|user|endoftext)\s*\|?>",
    r"\[{1,2}/?\s*(system|inst|admin)\s*\]{1,2}",
    r"#{2,}\s*system",
    r"\b(tool output|function_call|refund_allowed|policy_check)\b",
    r"\b(you are now|act as|pretend (to be|you are|the)|from now on,? you|new (instructions?|task|rule)s?|"
    r"developer mode|override mode|jailbreak|do anything now|let'?s play a game|imagine you are|"
    r"no restrictions|note to the (ai|assistant|model|bot))\b",
    r"\b(as|i am|this is) (the |an? |your )?(admin(istrator)?|supervisor|developer|system|head of [a-z ]+)\b"
    r"[^.!?\n]{0,60}\b(authori[sz]e|approve|allow|order|instruct|override)",
    r"\b(reply|respond|answer) (exactly )?(with|that)\b[^.!?\n]{0,40}\b(decision|approved?|refund)",
    # a ready-made answer: a JSON decision field or the decision codes themselves
    r"[\"']?\b(decision|policy_refs|next_action|customer_response)\b[\"']?\s*[:=]",
    r"\b(APPROVE_REFUND(_WITH_FEE)?|APPROVE_EXCHANGE|APPROVE_REPLACEMENT|APPROVE_CANCELLATION|REQUEST_INFO)\b",
    r"\b(auto_send|auto-send)\b",
)
_IGNORE_WORDS = (
    r"ignor|oubli|olvid|vergiss|negeer|игнорир|забудь|zignoruj|zapomnij|yok say|unut|dimentica|esque[cç]a|"
    r"忽略|忽视|无视|無視|忘れ"
)
_RULE_WORDS = (
    r"instruc|anweisung|istruzion|instru[cç][oõ]|instructie|инструкц|instrukcj|talimat|指令|指示|命令|"
    r"r[eè]gle|regla|regel|richtlin|regol|regra|правил|politi|polic|規則|规则|ルール|kural"
)
_OTHER_LANGUAGES = (
    rf"({_IGNORE_WORDS})[^.!?\n。！？]{{0,40}}?({_RULE_WORDS})",
    rf"({_RULE_WORDS})[^.!?\n。！？]{{0,20}}?({_IGNORE_WORDS})",  # word orders like Japanese and Turkish
)
_INJECTION = re.compile("|".join(_ENGLISH + _OTHER_LANGUAGES), re.IGNORECASE)

# Latin look-alikes in Cyrillic and Greek (lower and upper case), mapped to the letter they mimic.
_HOMOGLYPHS = str.maketrans({
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ј": "j", "ԁ": "d", "ɡ": "g", "А": "A", "В": "B", "Е": "E",
    "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "І": "I",
    "Ј": "J", "α": "a", "ο": "o", "ν": "v", "ι": "i", "ρ": "p", "τ": "t", "υ": "u", "κ": "k", "Α": "A",
    "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_LEET_L = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_SPELT_OUT = re.compile(r"\b(?:\w[ .\-_*]){2,}\w\b")  # i g n o r e / i.g.n.o.r.e
_SPLIT_WORD = re.compile(r"(?<=[a-z])[-_*](?=[a-z])", re.IGNORECASE)  # ig-nore
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
MAX_SCANNED_CHARS = 20_000  # a case message is shorter (policies.schema); bounds the work per case


def _folded(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_HOMOGLYPHS)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")  # zero-width and bidi


def _joined(text: str) -> str:
    text = _SPELT_OUT.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), text)
    return _SPLIT_WORD.sub("", text)


def _decoded_base64(text: str) -> Iterator[str]:
    for run in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable():
            yield decoded


def views(message: str) -> Iterator[str]:
    """The views of ``message`` the patterns are matched against (see the module's doc)."""
    text = message[:MAX_SCANNED_CHARS]
    folded = _folded(text)
    for leet in (folded.translate(_LEET), folded.translate(_LEET_L)):
        yield from (leet, _joined(leet))
    yield from (text, folded, _joined(folded))
    yield html.unescape(unquote(folded))
    yield folded[::-1]
    yield codecs.decode(folded, "rot13")
    for decoded in _decoded_base64(folded):
        yield from (decoded, _folded(decoded))


def injection_suspected(message: str) -> bool:
    """True when ``message`` looks like an attempt to instruct the model in any of its views."""
    return any(_INJECTION.search(view) for view in views(message))
