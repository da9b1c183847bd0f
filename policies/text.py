"""Clean, bounded text: the one validator of every free-text field and identifier (issue 17).

Three kinds of text, one set of rules:

- ``"text"``: multiline free text (a case's message, an answer's prose, a reviewer's note). It may
  hold ``\\n`` and ``\\t``, nothing else below U+0020.
- ``"line"``: one printable line (an order's item, a saved filter's name): letters and marks of any
  script, digits, spaces, punctuation and symbols; no tab or line break, no format, private-use or
  unassigned character; not blank.
- ``"identifier"``: ``^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`` (case, customer and order ids).

Refused in every kind: C0 control characters (but ``\\n`` and ``\\t`` in text), DEL and the C1
controls (U+007F-U+009F), bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069),
zero-width characters (U+200B-U+200D, U+2060, U+FEFF), the line and paragraph separators U+2028 and
U+2029 (line breaks that are not ``\\n``: they split a JSONL file read with ``str.splitlines``) and
lone surrogates. The length is counted in characters (code points) and checked first, so a 30 MB
string is refused without being scanned.

Nothing is rewritten: a value is accepted as it is or refused with a message naming the field and
the first character at fault, e.g. ``reasoning: holds a control character (U+001B) at position 12``
(positions count characters from 0). Use :func:`clean_text` in plain code and :class:`TextRule` as
``Annotated`` metadata on a pydantic field (the error then names the field through its location).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

TextKind = Literal["text", "line", "identifier"]

IDENTIFIER_MAX_CHARS = 64
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_IDENTIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_IDENTIFIER_RULE = "an identifier is 1 to 64 of A-Z a-z 0-9 . _ : - and starts with a letter or digit"

# The refused code points, as regex class ranges (one source for the check and the JSON schema).
_C0_BUT_TAB_AND_LF = r"\x00-\x08\x0b-\x1f"
_C0 = r"\x00-\x1f"
_DEL_AND_C1 = r"\x7f-\x9f"
_INVISIBLE = r"\u200b-\u200d\u2028-\u202e\u2060\u2066-\u2069\ufeff"  # zero-width, separators, bidi
_SURROGATES = r"\ud800-\udfff"

_REFUSED_IN_TEXT = re.compile(f"[{_C0_BUT_TAB_AND_LF}{_DEL_AND_C1}{_INVISIBLE}{_SURROGATES}]")
_REFUSED_IN_LINE = re.compile(f"[{_C0}{_DEL_AND_C1}{_INVISIBLE}{_SURROGATES}]")
# For JSON schemas (llguidance compiles the answer's into the constrained-decoding grammar, so a
# model cannot write what parse_answer refuses). Surrogates are left out: a regex engine over
# Unicode scalar values cannot name them, and a JSON text cannot carry a lone one unescaped.
TEXT_PATTERN = f"^[^{_C0_BUT_TAB_AND_LF}{_DEL_AND_C1}{_INVISIBLE}]*$"
LINE_PATTERN = f"^[^{_C0}{_DEL_AND_C1}{_INVISIBLE}]*$"
_PATTERNS = {"text": TEXT_PATTERN, "line": LINE_PATTERN, "identifier": IDENTIFIER_PATTERN}

# Unicode general categories a printable line may hold: letters, marks, numbers, punctuation,
# symbols and space separators. Not Cc/Cf/Cs/Co/Cn (controls, format, surrogates, private use,
# unassigned) nor Zl/Zp.
_LINE_CATEGORIES = frozenset("LMNPS")  # first letters; and Zs


class TextError(ValueError):
    """A text was refused; ``field`` names it, ``problem`` says why, str() is ``"field: problem"``."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _describe(ch: str) -> str:
    """What ``ch`` is, for an error message: ``a control character (U+001B)``."""
    cp = ord(ch)
    if ch == "\n":
        what = "a line break"
    elif ch == "\r":
        what = "a carriage return"
    elif ch == "\t":
        what = "a tab"
    elif cp < 0x20 or 0x7F <= cp <= 0x9F:
        what = "a control character"
    elif 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069:
        what = "a bidi control character"
    elif 0x200B <= cp <= 0x200D or cp in (0x2060, 0xFEFF):
        what = "a zero-width character"
    elif cp in (0x2028, 0x2029):
        what = "a line or paragraph separator"
    elif 0xD800 <= cp <= 0xDFFF:
        what = "a lone surrogate"
    elif ch == " ":
        what = "a space"
    else:
        category = unicodedata.category(ch)
        what = {
            "Cf": "a format character", "Co": "a private-use character", "Cn": "an unassigned character",
            "Zs": "a space", "Zl": "a line separator", "Zp": "a paragraph separator",
        }.get(category) or f"{ch!r}"
    return f"{what} (U+{cp:04X})"


@dataclass(frozen=True)
class TextRule:
    """The rules of one field: its kind and length bounds. Also pydantic ``Annotated`` metadata:
    ``reasoning: Annotated[str, TextRule(400, min_chars=1)]`` (the str itself stays strict)."""

    max_chars: int
    min_chars: int = 0
    kind: TextKind = "text"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (without the field's name), or None when it is fine."""
        if not isinstance(value, str):
            return f"must be a string (got {type(value).__name__})"
        n = len(value)
        if n > self.max_chars:
            return f"is {n:,} characters long; at most {self.max_chars:,} are allowed"
        if n == 0 and self.min_chars:
            return "must not be empty"
        if n < self.min_chars:
            return f"is {n:,} characters long; at least {self.min_chars:,} are needed"
        refused = _REFUSED_IN_TEXT if self.kind == "text" else _REFUSED_IN_LINE
        if m := refused.search(value):
            return f"holds {_describe(m.group())} at position {m.start()}"
        if self.kind == "identifier":
            if not _IDENTIFIER.fullmatch(value):
                at = next((i for i, ch in enumerate(value) if ch not in _IDENTIFIER_CHARS), 0)
                return f"holds {_describe(value[at])} at position {at}; {_IDENTIFIER_RULE}"
        elif self.kind == "line":
            for i, ch in enumerate(value):
                category = unicodedata.category(ch)
                if category[0] not in _LINE_CATEGORIES and category != "Zs":
                    return f"holds {_describe(ch)} at position {i}; it must be one printable line"
            if n and value.isspace():
                return "must not be blank"
        return None

    def check(self, value: Any, field: str) -> str:
        """``value`` unchanged when it keeps the rules; else raises :class:`TextError` naming ``field``."""
        problem = self.problem(value)
        if problem is not None:
            raise TextError(field, problem)
        return value

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema keywords of the rule (a necessary condition; for a line, not a sufficient one)."""
        out: dict[str, Any] = {"maxLength": self.max_chars}
        if self.min_chars:
            out["minLength"] = self.min_chars
        out["pattern"] = _PATTERNS[self.kind]
        return out

    # --- pydantic -------------------------------------------------------------------------------
    def _validate(self, value: str) -> str:
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(problem)  # pydantic names the field from its location
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.update(self.json_schema())
        return out


IDENTIFIER = TextRule(IDENTIFIER_MAX_CHARS, min_chars=1, kind="identifier")


def clean_text(value: Any, field: str, max_chars: int, *, multiline: bool = True, min_chars: int = 0) -> str:
    """``value`` unchanged when it is clean text of ``min_chars`` to ``max_chars`` characters, else
    raises :class:`TextError` naming ``field``. ``multiline`` allows ``\\n`` and ``\\t`` (free text);
    without it the value must be one printable line (see the module's doc)."""
    return TextRule(max_chars, min_chars, "text" if multiline else "line").check(value, field)


def check_identifier(value: Any, field: str) -> str:
    """``value`` unchanged when it matches :data:`IDENTIFIER_PATTERN`, else raises :class:`TextError`."""
    return IDENTIFIER.check(value, field)
