"""The one text validator (policies/text.py): each refused character class, lengths, identifiers,
printable lines, and messages that name the field and the character at fault."""

from __future__ import annotations

import re
import time

import pytest

from policies import TextError, TextRule, clean_text
from policies.text import IDENTIFIER_PATTERN, LINE_PATTERN, TEXT_PATTERN, check_identifier

# (label, character) refused in every kind of text
REFUSED = [
    ("NUL", "\x00"), ("BEL", "\x07"), ("backspace", "\x08"), ("vertical tab", "\x0b"), ("form feed", "\x0c"),
    ("carriage return", "\r"), ("ESC", "\x1b"), ("unit separator", "\x1f"), ("DEL", "\x7f"),
    ("C1 padding", "\x80"), ("C1 NEL", "\x85"), ("C1 CSI", "\x9b"), ("C1 APC", "\x9f"),
    ("LRE", "\u202a"), ("RLE", "\u202b"), ("PDF", "\u202c"), ("LRO", "\u202d"), ("RLO", "\u202e"),
    ("LRI", "\u2066"), ("RLI", "\u2067"), ("FSI", "\u2068"), ("PDI", "\u2069"),
    ("ZWSP", "\u200b"), ("ZWNJ", "\u200c"), ("ZWJ", "\u200d"), ("word joiner", "\u2060"), ("BOM", "\ufeff"),
    ("line separator", "\u2028"), ("paragraph separator", "\u2029"),
    ("lone high surrogate", "\ud800"), ("lone low surrogate", "\udc80"),
]
KIND_WORDS = {
    "\r": "carriage return", "\u2028": "separator", "\u2029": "separator",
    **{c: "control character" for c in "\x00\x07\x08\x0b\x0c\x1b\x1f\x7f\x80\x85\x9b\x9f"},
    **{c: "bidi" for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"},
    **{c: "zero-width" for c in "\u200b\u200c\u200d\u2060\ufeff"},
    **{c: "surrogate" for c in "\ud800\udc80"},
}


@pytest.mark.parametrize("ch", [c for _, c in REFUSED], ids=[label for label, _ in REFUSED])
@pytest.mark.parametrize("multiline", [True, False])
def test_each_refused_class_is_named_with_field_code_point_and_position(ch, multiline):
    with pytest.raises(TextError) as err:
        clean_text("Refund please" + ch + "now", "reasoning", 400, multiline=multiline)
    assert err.value.field == "reasoning"
    message = str(err.value)
    assert message.startswith("reasoning: holds ")
    assert f"(U+{ord(ch):04X}) at position 13" in message
    assert KIND_WORDS[ch] in message


def test_the_issue_example_message():
    expected = "reasoning: holds a control character (U+001B) at position 12"
    with pytest.raises(TextError, match=f"^{re.escape(expected)}$"):
        clean_text("RET-9 final " + "\x1b[31m", "reasoning", 400)


def test_multiline_text_keeps_newline_and_tab_and_any_script():
    text = "Hello,\n\tthe lamp arrived broken. Merci ! Ça va ? 東京 — «ok» 😀 \u200e"  # LRM is a mark, kept
    assert clean_text(text, "message", 4000) is text


@pytest.mark.parametrize("ch", ["\n", "\t"])
def test_one_line_refuses_newline_and_tab(ch):
    with pytest.raises(TextError, match=r"^item: holds a (line break|tab) \(U\+000[9A]\) at position 4"):
        clean_text("Lamp" + ch + "shade", "item", 120, multiline=False)


@pytest.mark.parametrize(
    ("ch", "word"),
    [("\u00ad", "format"), ("\u200e", "format"), ("\ue000", "private-use"), ("\U000e0001", "format")],
)
def test_one_line_refuses_invisible_and_private_characters(ch, word):
    with pytest.raises(TextError, match=f"item: holds an? {word} character"):
        clean_text("Lamp" + ch, "item", 120, multiline=False)


@pytest.mark.parametrize("line", ["Wireless headphones", "4K TV", "E-book bundle", "Lampe à poser – 40 cm",
                                  "東京タワー模型", "लैपटॉप", "Tee & Kaffee (500 g) ™ / +", "Mug\u00a0set"])
def test_one_line_accepts_printable_text_in_any_script(line):
    assert clean_text(line, "item", 120, multiline=False) == line


def test_one_line_is_not_blank():
    with pytest.raises(TextError, match="item: must not be blank"):
        clean_text("   ", "item", 120, multiline=False, min_chars=1)


def test_length_bounds_name_the_field_and_check_before_scanning():
    assert clean_text("x" * 400, "reasoning", 400) == "x" * 400
    with pytest.raises(TextError, match=r"^reasoning: is 401 characters long; at most 400 are allowed$"):
        clean_text("x" * 401, "reasoning", 400)
    with pytest.raises(TextError, match=r"^next_action: must not be empty$"):
        clean_text("", "next_action", 160, min_chars=1)
    with pytest.raises(TextError, match=r"^name: is 1 characters long; at least 2 are needed$"):
        clean_text("x", "name", 80, min_chars=2)
    assert clean_text("", "note", 2000) == ""
    huge = "\x00" * (30 * 2**20)  # 30 MB of NUL: refused for its length, without a scan
    start = time.perf_counter()
    with pytest.raises(TextError, match=r"^note: is 31,457,280 characters long; at most 2,000 are allowed$"):
        clean_text(huge, "note", 2000)
    assert time.perf_counter() - start < 0.05


def test_length_counts_characters_not_bytes():
    assert clean_text("é" * 400, "reasoning", 400)
    assert clean_text("😀" * 400, "reasoning", 400)


@pytest.mark.parametrize("value", [None, 5, b"bytes", ["x"]])
def test_non_strings_are_refused(value):
    with pytest.raises(TextError, match=r"^note: must be a string \(got "):
        clean_text(value, "note", 2000)


@pytest.mark.parametrize("value", ["C-000123", "U-1", "O-5415879", "C-TR-00000", "a", "A.b_c:d-e", "7" * 64])
def test_identifiers_accepted(value):
    assert check_identifier(value, "case_id") == value
    assert re.fullmatch(IDENTIFIER_PATTERN.strip("^$"), value)


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("C 1", "a space (U+0020) at position 1"),
        ("C-1\n", "a line break (U+000A) at position 3"),
        ("C\t1", "a tab (U+0009) at position 1"),
        ("-C1", "'-' (U+002D) at position 0"),
        ("C\u200b1", "a zero-width character (U+200B) at position 1"),
        ("C\u202e1", "a bidi control character (U+202E) at position 1"),
        ("Ç-1", "'Ç' (U+00C7) at position 0"),
        ("C/1", "'/' (U+002F) at position 1"),
        ("C\u00a01", "a space (U+00A0) at position 1"),
        ("", "must not be empty"),
        ("x" * 65, "is 65 characters long; at most 64 are allowed"),
    ],
)
def test_identifiers_refused_with_the_character_named(value, found):
    with pytest.raises(TextError) as err:
        check_identifier(value, "order.id")
    assert str(err.value).startswith("order.id: ") and found in str(err.value)


def test_json_schema_patterns_refuse_what_the_check_refuses():
    """The answer's JSON schema (the constrained-decoding grammar) carries TEXT_PATTERN: a model must
    not be able to write what parse_answer refuses, and everything the check allows must stay writable."""
    for _, ch in REFUSED:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            continue  # no unescaped lone surrogate in JSON text; the check refuses the escaped ones
        assert not re.search(LINE_PATTERN, "a" + ch + "b")
        assert not re.search(TEXT_PATTERN, "a" + ch + "b")
    assert re.search(TEXT_PATTERN, "ok\n\tfine 東京 😀")
    assert not re.search(LINE_PATTERN, "a\nb")
    rule = TextRule(400, min_chars=1)
    assert rule.json_schema() == {"maxLength": 400, "minLength": 1, "pattern": TEXT_PATTERN}
