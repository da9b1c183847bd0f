"""policies.item_names and scripts/rename_items.py: names our catalogue does not have, split so that no
measurement set's name was trained on; only the name moves; the committed renamed sets reproduce."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from policies import expected_decision, parse_case
from policies.item_names import (
    BRANDS,
    MODIFIERS,
    NAME_SPLITS,
    OPEN_NOUNS,
    catalogue_names,
    item_title,
    open_item_name,
    rename_rows,
    renamed_row,
)
from policies.leakage import fields_key

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "data" / "generated"


def _rows(name: str, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (GENERATED / name).open(encoding="utf-8")]
    return rows[:n] if n else rows


def _noun_of(name: str) -> str:
    lower = name.lower()
    if lower in OPEN_NOUNS:
        return lower
    for modifier in sorted(MODIFIERS, key=len, reverse=True):
        if lower.startswith(modifier + " "):
            return lower[len(modifier) + 1:]
    return lower


def test_the_open_vocabulary_is_not_the_catalogue_and_its_splits_share_no_noun():
    assert len(set(OPEN_NOUNS)) == len(OPEN_NOUNS)
    assert not set(OPEN_NOUNS) & catalogue_names()
    nouns = {}
    for split in NAME_SPLITS:
        rng = random.Random(split)
        nouns[split] = {_noun_of(open_item_name(rng, split)) for _ in range(3000)}
        assert nouns[split] <= set(OPEN_NOUNS)
    assert len(nouns["train"]) > len(nouns["validation"]) >= 20
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not nouns[a] & nouns[b], (a, b)


def test_a_renamed_row_moves_the_name_only():
    for row in _rows("stress.jsonl", 60):
        new = renamed_row(row, "Compact soundbar")
        case, old_case = parse_case(new["input"]), parse_case(row["input"])
        assert case.order.item == "Compact soundbar"
        assert case.model_copy(update={"order": case.order.model_copy(update={"item": old_case.order.item}),
                                       "message": old_case.message}) == old_case
        assert expected_decision(case) == expected_decision(old_case)
        assert new["output"]["decision"] == row["output"]["decision"]
        assert new["output"]["policy_refs"] == row["output"]["policy_refs"]
        assert "Compact soundbar".lower() in new["output"]["customer_response"].lower()
        assert old_case.order.item.lower() not in case.message.lower()
        assert new["id"] == row["id"] and case.case_id == old_case.case_id


def test_rename_rows_takes_its_share_deterministically():
    rows = _rows("validation.jsonl", 200)
    assert rename_rows(rows, seed=1, share=0.0) == rows
    every = rename_rows(rows, seed=1, share=1.0, split="validation")
    assert all(r["input"]["order"]["item"] != s["input"]["order"]["item"]
               for r, s in zip(every, rows, strict=True))
    half = rename_rows(rows, seed=1, share=0.5)
    changed = sum(r is not s for r, s in zip(half, rows, strict=True))
    assert 70 <= changed <= 130
    assert half == rename_rows(rows, seed=1, share=0.5)
    assert half != rename_rows(rows, seed=2, share=0.5)
    # the name is drawn without regard to the category: one noun lands in several categories
    categories: dict[str, set[str]] = {}
    for row in rename_rows(_rows("validation.jsonl"), seed=3, share=1.0, split="train"):
        order = row["input"]["order"]
        categories.setdefault(_noun_of(order["item"]), set()).add(order["category"])
    assert max(len(c) for c in categories.values()) >= 4
    with pytest.raises(ValueError, match="share"):
        rename_rows(rows, seed=1, share=1.5)
    with pytest.raises(ValueError, match="split"):
        rename_rows(rows, seed=1, split="eval")  # type: ignore[arg-type]


def _brand_of(title: str) -> str:
    return next(b for b in sorted(BRANDS, key=len, reverse=True) if title.startswith(b + " "))


def test_catalogue_titles_carry_digits_and_keep_the_splits_apart():
    brands: dict[str, set[str]] = {}
    for split in NAME_SPLITS:
        rng = random.Random(split)
        titles = [item_title(rng, split) for _ in range(2000)]
        brands[split] = {_brand_of(t) for t in titles}
        assert sum(any(c.isdigit() for c in t) for t in titles) > 600  # model codes, "500 ml", "128 GB"
        assert sum(("–" in t or "(" in t or "," in t) for t in titles) > 600
        for title in titles:  # the noun is one of the split's, after the brand and code
            assert any(f" {noun}" in title.lower() for noun in OPEN_NOUNS)
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not brands[a] & brands[b], (a, b)
    title = "Brightline Z9407 desk – navy, 500 ml"
    case = parse_case(renamed_row(_rows("stress.jsonl", 1)[0], title)["input"])
    assert case.order.item == title  # the schema takes a real title


def test_styles_draw_plain_names_as_before():
    rows = _rows("validation.jsonl", 100)
    plain = rename_rows(rows, seed=1, split="validation")
    assert plain == rename_rows(rows, seed=1, split="validation", style="plain")
    titled = rename_rows(rows, seed=1, split="validation", style="title")
    assert all(r["input"]["order"]["item"].split()[0] in {b.split()[0] for b in BRANDS} for r in titled)
    mixed = [r["input"]["order"]["item"]
             for r in rename_rows(rows, seed=1, split="validation", style="mixed")]
    with_brand = sum(name.split()[0] in {b.split()[0] for b in BRANDS} for name in mixed)
    assert 25 <= with_brand <= 75
    with pytest.raises(ValueError, match="style"):
        rename_rows(rows, seed=1, style="fancy")  # type: ignore[arg-type]


@pytest.mark.parametrize(("source", "renamed", "names", "seed", "style"), [
    ("validation.jsonl", "validation_renamed.jsonl", "validation", 1, "plain"),
    ("validation_independent.jsonl", "validation_independent_renamed.jsonl", "validation", 2, "plain"),
    ("stress.jsonl", "stress_renamed.jsonl", "test", 3, "plain"),
    ("eval.jsonl", "eval_renamed.jsonl", "test", 4, "plain"),
    ("validation.jsonl", "validation_titled.jsonl", "validation", 11, "title"),
    ("validation_independent.jsonl", "validation_independent_titled.jsonl", "validation", 12, "title"),
    ("stress.jsonl", "stress_titled.jsonl", "test", 13, "title"),
    ("eval.jsonl", "eval_titled.jsonl", "test", 14, "title"),
])
def test_the_committed_renamed_sets_reproduce(source, renamed, names, seed, style, tmp_path: Path):
    from scripts.rename_items import main

    out = tmp_path / renamed
    args = [str(GENERATED / source), str(out), "--names", names, "--seed", str(seed), "--style", style]
    assert main(args) == 0
    assert out.read_bytes() == (GENERATED / renamed).read_bytes()
    rows = _rows(renamed)
    if style == "plain":
        assert all(_noun_of(r["input"]["order"]["item"]) in OPEN_NOUNS for r in rows)
    # only the names moved: the deciding fields differ from the source's by the item alone
    for row, src in zip(rows, _rows(source), strict=True):
        back = {**row["input"], "order": {**row["input"]["order"], "item": src["input"]["order"]["item"]}}
        assert fields_key(back) == fields_key(src["input"])


@pytest.mark.parametrize(("args", "said"), [
    (["--names", "train", "--share", "2"], "argument --share: 2"),
    (["--names", "eval"], "argument --names: invalid choice: 'eval'"),
    (["--names", "train", "--style", "fancy"], "argument --style: invalid choice: 'fancy'"),
    (["--names", "train", "--seed", "-1"], "argument --seed: -1 is out of range"),
])
def test_rename_items_refuses_with_one_line(args, said, tmp_path: Path, capsys):
    from scripts.rename_items import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(GENERATED / "validation.jsonl"), str(tmp_path / "out.jsonl"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "out.jsonl").exists()


def test_rename_items_will_not_write_over_its_input(tmp_path: Path, capsys):
    from scripts.rename_items import main

    src = tmp_path / "rows.jsonl"
    src.write_text((GENERATED / "validation.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    before = src.read_bytes()
    with pytest.raises(SystemExit):
        main([str(src), str(src), "--names", "train"])
    assert "is the input file" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_rename_items_names_a_bad_line_and_writes_nothing(tmp_path: Path, capsys):
    from scripts.rename_items import main

    src = tmp_path / "rows.jsonl"
    first = (GENERATED / "validation.jsonl").read_text(encoding="utf-8").splitlines()[0]
    src.write_text(first + "\nnot json\n", encoding="utf-8")
    assert main([str(src), str(tmp_path / "out.jsonl"), "--names", "train"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {src}:2: not valid JSON (Expecting value)"
    assert not (tmp_path / "out.jsonl").exists()
