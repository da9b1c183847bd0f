"""policies.leakage: the fields and prompt keys, the frozen sets and the leak finder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from policies import parse_case
from policies.leakage import (
    KNOWN_FORMATS,
    FrozenSetError,
    Leak,
    TrainingPoolLeak,
    fields_key,
    find_leaks,
    frozen_keys,
    iter_jsonl,
    prompt_key,
    row_keys,
)
from policies.prompt import PromptFormat, build_messages
from policies.synth import reference_answer
from tests.policies.conftest import case_dict

TINY = KNOWN_FORMATS[1]
FORMATS = (*KNOWN_FORMATS, PromptFormat(policy="titles", instructions="short", max_message_chars=60))


def _other_ids_and_message(data: dict[str, Any], tag: str = "X") -> dict[str, Any]:
    other = json.loads(json.dumps(data))
    other["case_id"] = f"C-{tag}"
    other["customer"]["id"] = f"U-{tag}"
    other["order"]["id"] = f"O-{tag}"
    other["message"] = f"A different message ({tag}), about the same order."
    return other


def _row(data: dict[str, Any]) -> dict[str, Any]:
    case = parse_case(data)
    return {"id": data["case_id"], "instruction": "Decide.", "input": data,
            "output": reference_answer(case).model_dump(mode="json")}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_ids_and_message_do_not_change_the_fields_key() -> None:
    data = case_dict(price=120.0)
    twin = _other_ids_and_message(data)
    assert fields_key(parse_case(data)) == fields_key(parse_case(twin)) == fields_key(data)
    # the tiny model's prompt drops ids and message: the twin is the same prompt to it
    assert prompt_key(parse_case(data), TINY) == prompt_key(parse_case(twin), TINY)
    assert prompt_key(parse_case(data)) != prompt_key(parse_case(twin))  # the JSON prompt shows them


def test_a_different_price_changes_every_key() -> None:
    a, b = parse_case(case_dict(price=120.0)), parse_case(case_dict(price=121.0))
    assert fields_key(a) != fields_key(b)
    for fmt in FORMATS:
        assert prompt_key(a, fmt) != prompt_key(b, fmt), fmt
    assert fields_key(case_dict(price=120)) == fields_key(a)  # an int price is the same price


def test_prompt_key_differs_between_formats() -> None:
    case = parse_case(case_dict())
    assert len({prompt_key(case, fmt) for fmt in FORMATS}) == len(FORMATS)


@pytest.mark.parametrize("change", [
    {"region": "UK"}, {"request_type": "exchange"}, {"reason": "wrong_item"}, {"tier": "vip"},
    {"claims": 2}, {"category": "home"}, {"item": "Rain coat"}, {"price": 50.01}, {"final_sale": True},
    {"status": "shipped"}, {"days": 6}, {"opened": True}, {"signed": True},
])
def test_every_deciding_field_shows_in_every_prompt(change: dict[str, Any]) -> None:
    """Equal prompts imply equal deciding fields: deduplicating by fields key covers the prompt keys."""
    base, changed = parse_case(case_dict()), parse_case(case_dict(**change))
    assert fields_key(base) != fields_key(changed)
    for fmt in FORMATS:
        assert prompt_key(base, fmt) != prompt_key(changed, fmt), fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_messages_row_has_the_keys_of_its_case(fmt: PromptFormat) -> None:
    row = _row(case_dict(price=77.5, message="Please, it broke. = sign\nand a second line"))
    case = parse_case(row["input"])
    messages = build_messages(case, fmt, reference_answer(case))
    assert row_keys({"messages": messages}, fmt) == row_keys(row, fmt)
    assert row_keys(row, fmt) == {"fields": fields_key(case), "prompt": prompt_key(case, fmt)}
    edited = [dict(m) for m in messages]
    edited[1]["content"] = "a hand-written user turn"
    assert set(row_keys({"messages": edited}, fmt)) == {"prompt"}  # no case to read back


@pytest.fixture
def frozen_file(tmp_path: Path) -> Path:
    rows = [_row(case_dict(case_id=f"C-EV-{i}", price=price)) for i, price in enumerate((10.0, 20.0, 30.0))]
    return _write(tmp_path / "eval.jsonl", rows)


def test_find_leaks_names_the_row_the_frozen_row_and_the_key(tmp_path: Path, frozen_file: Path) -> None:
    frozen = frozen_keys([frozen_file, tmp_path / "stress.jsonl"], TINY)  # no stress set yet: skipped
    assert frozen.paths == [str(frozen_file)] and frozen.fmt == TINY
    leaked = _other_ids_and_message(case_dict(case_id="C-EV-1", price=20.0), "TR-7")
    pool = _write(tmp_path / "pool.jsonl", [_row(case_dict(case_id="C-TR-1", price=21.0)), _row(leaked)])
    leaks = find_leaks(iter_jsonl(pool), frozen, TINY)
    assert leaks == [Leak(f"{pool}:2 (C-TR-7)", f"{frozen_file}:2 (C-EV-1)", "fields")]
    assert "pool.jsonl:2 (C-TR-7) ~ " in str(TrainingPoolLeak(leaks))
    # bare rows are named by their id, else their position; an export's messages row is read back
    case = parse_case(leaked)
    msgs = {"messages": build_messages(case, TINY, reference_answer(case))}
    found = find_leaks([_row(case_dict(price=21.0)), _row(leaked), msgs], frozen)
    assert [(leak.row, leak.key) for leak in found] == [("#2 (C-TR-7)", "fields"), ("#3", "fields")]
    with pytest.raises(ValueError, match="format"):
        find_leaks([msgs], frozen, PromptFormat())


def test_a_messages_row_is_caught_by_its_prompt(tmp_path: Path) -> None:
    case = parse_case(case_dict(case_id="C-EV-9"))
    frozen_msgs = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
                                {"role": "assistant", "content": "{}"}]}
    frozen = frozen_keys([_write(tmp_path / "eval.jsonl", [frozen_msgs])], TINY)
    assert not frozen.fields and len(frozen.prompts) == 1
    same_prompt = {"messages": [*frozen_msgs["messages"][:2], {"role": "assistant", "content": "other"}]}
    assert [leak.key for leak in find_leaks([same_prompt, _row(case.to_json_dict())], frozen)] == ["prompt"]


def test_training_pool_leak_names_the_first_20_and_the_count() -> None:
    leaks = [Leak(f"pool.jsonl:{i}", "eval.jsonl:1", "fields") for i in range(1, 26)]
    text = str(TrainingPoolLeak(leaks))
    assert text.startswith("25 training row(s) match a frozen")
    assert "pool.jsonl:20 ~ eval.jsonl:1 by fields key" in text and "pool.jsonl:21 " not in text
    assert text.endswith("and 5 more")
    assert isinstance(TrainingPoolLeak(leaks), ValueError)


def test_a_bad_frozen_row_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "eval.jsonl"
    bad.write_text(json.dumps(_row(case_dict())) + "\n" + json.dumps({"input": {"case_id": "x"}}) + "\n")
    with pytest.raises(FrozenSetError, match=r"eval\.jsonl:2"):
        frozen_keys([bad])
