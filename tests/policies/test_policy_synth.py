"""The synthetic dataset generator: targeting, determinism, disjoint splits, manifest, balance."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from policies import expected_decision, parse_answer, parse_case
from policies.leakage import KNOWN_FORMATS, fields_key, frozen_keys
from policies.prompt import INSTRUCTIONS
from policies.synth import (
    TARGETS,
    DatasetLeakage,
    check_leakage,
    generate_rows,
    iter_lm_texts,
    reference_answer,
    sample_case,
    write_splits,
)

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("train", "validation", "eval")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("target", TARGETS)
def test_sample_case_reaches_its_target(target):
    rng = random.Random(target)
    for i in range(8):
        case = sample_case(rng, target, f"C-{i}")
        assert "+".join(expected_decision(case).policy_refs) == target
        assert case.message and len(case.message) <= 400
        answer = reference_answer(case)
        assert answer.policy_refs[0] in answer.reasoning
        assert case.order.item.lower() in answer.customer_response
        if "LIM-1" in target:
            assert "LIM-1" in answer.reasoning and "supervisor" in answer.next_action


def test_sample_case_rejects_unknown_target():
    with pytest.raises(ValueError, match="LIM-9"):
        sample_case(random.Random(0), "LIM-9", "C-1")


@pytest.fixture(scope="module")
def small_splits(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    return out, write_splits(out, seed=3, n_train=60, n_val=20, n_eval=20)


def test_same_seed_gives_byte_identical_files(small_splits, tmp_path):
    out, manifest = small_splits
    again = write_splits(tmp_path, seed=3, n_train=60, n_val=20, n_eval=20)
    assert again == manifest
    for name in (*(f"{s}.jsonl" for s in SPLITS), "manifest.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    other = write_splits(tmp_path / "other", seed=4, n_train=60, n_val=20, n_eval=20)
    assert other["files"]["train"]["sha256"] != manifest["files"]["train"]["sha256"]


def test_manifest_matches_the_files(small_splits):
    out, manifest = small_splits
    assert manifest["seed"] == 3
    for split in SPLITS:
        info = manifest["files"][split]
        data = (out / info["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == info["sha256"]
        rows = _read(out / info["path"])
        assert len(rows) == info["rows"] == sum(info["rules"].values())
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_splits_are_disjoint(small_splits):
    out, _ = small_splits
    rows = {split: _read(out / f"{split}.jsonl") for split in SPLITS}
    check_leakage(rows)  # raises on any overlap
    ids = [r["id"] for split in SPLITS for r in rows[split]]
    messages = [r["input"]["message"] for split in SPLITS for r in rows[split]]
    assert len(set(ids)) == len(ids) and len(set(messages)) == len(messages)


def test_leakage_check_names_the_ids(small_splits):
    out, _ = small_splits
    train, evals = _read(out / "train.jsonl"), _read(out / "eval.jsonl")
    copied = json.loads(json.dumps(train[0]))
    copied["id"] = copied["input"]["case_id"] = "C-EV-COPY"
    with pytest.raises(DatasetLeakage, match="C-EV-COPY") as info:
        check_leakage({"train": train, "eval": [*evals, copied]})
    # the JSON prompt shows the case id, so it alone differs
    assert {what for what, _, _ in info.value.overlaps} == {
        "message", "case", "fields", "prompt[titles/short/0/fields]"}
    assert train[0]["id"] in str(info.value)


def test_leakage_check_sees_a_case_under_other_ids_and_message(small_splits):
    """What the tiny model sees of a case (its deciding fields) leaks even when ids and message differ."""
    out, _ = small_splits
    train, evals = _read(out / "train.jsonl"), _read(out / "eval.jsonl")
    twin = json.loads(json.dumps(train[0]))
    twin["id"] = twin["input"]["case_id"] = "C-EV-TWIN"
    twin["input"]["customer"]["id"], twin["input"]["order"]["id"] = "U-TWIN", "O-TWIN"
    twin["input"]["message"] = "Another customer, another message, the same order."
    with pytest.raises(DatasetLeakage, match="C-EV-TWIN") as info:
        check_leakage({"train": train, "eval": [*evals, twin]})
    assert {what for what, _, _ in info.value.overlaps} == {"fields", "prompt[titles/short/0/fields]"}


def test_splits_share_no_deciding_fields_nor_prompt(small_splits):
    out, _ = small_splits
    keys = {split: [fields_key(r["input"]) for r in _read(out / f"{split}.jsonl")] for split in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not set(keys[a]) & set(keys[b]), (a, b)
    for fmt in KNOWN_FORMATS:  # nor a prompt in a known format (the eval set against the pools)
        frozen = frozen_keys([out / "eval.jsonl"], fmt)
        for split in ("train", "validation"):
            for row in _read(out / f"{split}.jsonl"):
                assert frozen.match_case(parse_case(row["input"])) is None


def test_a_row_whose_fields_are_frozen_is_replaced_the_others_kept():
    rows = generate_rows(30, seed=5, split="train")
    hit = {fields_key(rows[7]["input"])}
    again = generate_rows(30, seed=5, split="train", frozen_fields=hit)
    assert again == generate_rows(30, seed=5, split="train", frozen_fields=hit)  # deterministic
    assert [i for i in range(30) if again[i] != rows[i]] == [7]  # only the frozen row is redrawn
    assert fields_key(again[7]["input"]) not in hit and again[7]["id"] == rows[7]["id"]
    assert again[7]["output"]["policy_refs"] == rows[7]["output"]["policy_refs"]  # same target
    every = {fields_key(r["input"]) for r in rows}
    replaced = generate_rows(30, seed=5, split="train", frozen_fields=every)
    assert not every & {fields_key(r["input"]) for r in replaced}


def test_every_row_is_the_rule_engines_answer(small_splits):
    out, _ = small_splits
    for split in SPLITS:
        for row in _read(out / f"{split}.jsonl"):
            assert set(row) == {"id", "instruction", "input", "output"}
            assert row["instruction"] == INSTRUCTIONS and row["id"] == row["input"]["case_id"]
            case = parse_case(row["input"])
            answer = parse_answer(row["output"])
            expected = expected_decision(case)
            assert (answer.decision, tuple(answer.policy_refs)) == (expected.decision, expected.policy_refs)
            assert answer == reference_answer(case)


def test_splits_are_balanced_over_targets(small_splits):
    _, manifest = small_splits
    for split in SPLITS:
        counts = manifest["files"][split]["rules"]
        assert set(counts) <= set(TARGETS)
        full = [counts.get(t, 0) for t in TARGETS]
        assert max(full) - min(full) <= 1, (split, counts)


def test_generate_rows_skips_seen_text():
    first = generate_rows(40, seed=1, split="eval")
    seen = {r["input"]["message"] for r in first}
    again = generate_rows(40, seed=1, split="eval", seen_messages=set(seen))
    assert not seen & {r["input"]["message"] for r in again}


def test_lm_texts_hold_cases_only():
    texts = list(iter_lm_texts(66, seed=0))
    assert texts == list(iter_lm_texts(66, seed=0)) and len(set(texts)) == 66
    for text in texts:
        data = json.loads(text)
        parse_case(data)
        assert "decision" not in text and "policy_refs" not in text
    held_out = parse_case(json.loads(texts[0]))  # held out by its deciding fields, whatever its message
    kept = list(iter_lm_texts(66, seed=0, exclude=lambda case: fields_key(case) == fields_key(held_out)))
    assert fields_key(held_out) not in {fields_key(parse_case(json.loads(t))) for t in kept}
    assert len(kept) == 66 and kept[0] != texts[0]


def test_committed_dataset_matches_its_manifest():
    out = REPO / "data" / "generated"
    if not (out / "manifest.json").exists():
        pytest.skip("data/generated not generated")
    manifest = json.loads((out / "manifest.json").read_text())
    for split in SPLITS:
        info = manifest["files"][split]
        assert hashlib.sha256((out / info["path"]).read_bytes()).hexdigest() == info["sha256"], split
    rows = {split: _read(out / f"{split}.jsonl") for split in SPLITS}
    check_leakage(rows)  # by every key: ids, message, case, deciding fields, prompts in known formats
    for row in rows["eval"]:
        case = parse_case(row["input"])
        assert row["output"]["policy_refs"] == list(expected_decision(case).policy_refs)
