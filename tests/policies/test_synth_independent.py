"""The independent generator (policies/synth_independent.py), the stress set and the shortcut report."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from policies import expected_decision, parse_case
from policies.catalog import BOUNDARY_DAYS, TARGETS
from policies.correlation import correlation_report, mutual_information
from policies.leakage import FrozenSetError, fields_key
from policies.rules import AUTO_LIMIT
from policies.synth import generate_rows, write_splits
from policies.synth_independent import (
    frozen_keys_of,
    independent_fields,
    independent_rows,
    limit_twins,
    write_capped_pool,
    write_stress_set,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def draws() -> list:
    rng = random.Random(7)
    return [parse_case(independent_fields(rng, "C-1")) for _ in range(6000)]


def test_fields_are_drawn_independently(draws: list) -> None:
    # No field says anything about another beyond the plug-in estimator's bias (~0.005 bits here).
    columns = {
        "region": [c.region for c in draws],
        "category": [c.order.category for c in draws],
        "tier": [c.customer.tier for c in draws],
        "status": [c.order.status for c in draws],
        "final_sale": [c.order.final_sale for c in draws],
        "price_ratio": [round(c.order.price / AUTO_LIMIT[c.region], 1) > 1 for c in draws],
    }
    for a in columns:
        for b in columns:
            if a < b:
                assert mutual_information(columns[a], columns[b]) < 0.01, (a, b)


def test_whole_ranges_and_boundaries_are_drawn(draws: list) -> None:
    ratios = [c.order.price / AUTO_LIMIT[c.region] for c in draws]
    assert min(ratios) < 0.01 and max(ratios) > 2.5  # from a few units to several times the limit
    near = sum(0.9 <= r <= 1.1 for r in ratios) / len(ratios)
    assert near > 0.3  # prices just around the limit, over-sampled
    days = [c.order.days_since_delivery for c in draws if c.order.days_since_delivery is not None]
    assert max(days) > 1000 and min(days) == 0
    on_edge = sum(d in BOUNDARY_DAYS for d in days) / len(days)
    assert on_edge > 0.3  # boundary days, over-sampled
    assert {c.order.status for c in draws} == {"processing", "shipped", "delivered"}
    assert any(c.order.status == "delivered" and c.order.days_since_delivery is None for c in draws)
    # a boundary day is drawn whatever the category or request type
    edge_cats = Counter(c.order.category for c in draws if c.order.days_since_delivery in BOUNDARY_DAYS)
    assert len(edge_cats) == 6


def test_rows_are_balanced_over_chains_and_labelled_by_the_rules() -> None:
    rows = independent_rows(len(TARGETS) * 2, seed=3, split="train")
    chains = Counter("+".join(r["output"]["policy_refs"]) for r in rows)
    assert set(chains) == set(TARGETS) and set(chains.values()) == {2}
    for row in rows:
        case = parse_case(row["input"])
        assert row["output"]["decision"] == expected_decision(case).decision
    assert rows == independent_rows(len(TARGETS) * 2, seed=3, split="train")  # deterministic
    assert len({fields_key(r["input"]) for r in rows}) == len(rows)


def test_recipe_pool_teaches_the_item_price_shortcut_and_independent_draws_do_not(draws: list) -> None:
    # Balancing over chains keeps this (no rule looks at the item), so raw draws stand for the pools.
    recipe = [parse_case(r["input"]) for r in generate_rows(1500, seed=1, split="train")]
    old, new = correlation_report(recipe)["item_price"], correlation_report(draws[:1500])["item_price"]
    assert old > 0.5 and new < 0.2 and new < old / 4


def test_splits_in_independent_mode_do_not_share_cases(tmp_path: Path) -> None:
    manifest = write_splits(tmp_path, seed=5, n_train=33, n_val=33, n_eval=33, mode="independent")
    assert manifest["mode"] == "independent"
    keys = {split: {fields_key(json.loads(line)["input"]) for line in (tmp_path / f"{split}.jsonl").open()}
            for split in ("train", "validation", "eval")}
    assert not keys["train"] & keys["eval"] and not keys["validation"] & keys["eval"]


def test_stress_set_is_deduplicated_against_the_pools(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in independent_rows(33, seed=9, split="stress")))
    # the same seed would draw the same cases: against the pool, every one of them must be redrawn
    manifest = write_stress_set(tmp_path / "stress.jsonl", seed=9, n=33, against=[pool])
    stress = [json.loads(line) for line in (tmp_path / "stress.jsonl").open()]
    pool_keys = {fields_key(json.loads(line)["input"]) for line in pool.open()}
    assert manifest["rows"] == 33 and manifest["checked_against"] == [str(pool)]
    assert not {fields_key(r["input"]) for r in stress} & pool_keys


def test_committed_stress_set_is_independent_balanced_and_disjoint() -> None:
    rows = [json.loads(line) for line in (REPO / "data/generated/stress.jsonl").open()]
    assert len(rows) == 300
    chains = Counter("+".join(r["output"]["policy_refs"]) for r in rows)
    assert set(chains) == set(TARGETS) and max(chains.values()) - min(chains.values()) <= 1
    frozen = set()
    for split in ("train", "validation", "eval"):
        path = REPO / f"data/generated/{split}.jsonl"
        frozen |= {fields_key(json.loads(line)["input"]) for line in path.open()}
    assert not {fields_key(r["input"]) for r in rows} & frozen


def test_capped_pool_caps_each_chain_keeps_rare_ones_apart_and_skips_frozen_cases(tmp_path: Path) -> None:
    frozen = tmp_path / "frozen.jsonl"
    reported: list[int] = []
    first = write_capped_pool(tmp_path / "a", seed=3, quota=4, draws=20_005, on_draw=reported.append)
    assert sum(reported) == 20_005  # progress adds up to the draws
    common = [json.loads(line) for line in (tmp_path / "a-common.jsonl").open()]
    rare = [json.loads(line) for line in (tmp_path / "a-rare.jsonl").open()]
    chains = Counter("+".join(r["output"]["policy_refs"]) for r in common)
    rare_chains = Counter("+".join(r["output"]["policy_refs"]) for r in rare)
    assert set(chains.values()) == {4}  # every common chain filled its quota exactly
    assert all(n < 4 for n in rare_chains.values()) and not set(chains) & set(rare_chains)
    assert set(chains) | set(rare_chains) <= set(TARGETS) and len(chains) >= 20
    for row in common + rare:  # labelled by the rule engine
        expected = expected_decision(parse_case(row["input"]))
        assert tuple(row["output"]["policy_refs"]) == tuple(expected.policy_refs)
    keys = [fields_key(r["input"]) for r in common + rare]
    assert len(set(keys)) == len(keys)
    assert first["files"]["common"]["rows"] == len(common)
    # deterministic; and against a pool holding half its rows, none of those comes back
    frozen.write_text("".join(json.dumps(r) + "\n" for r in common[::2]))
    again = write_capped_pool(tmp_path / "b", seed=3, quota=4, draws=20_005, against=[frozen])
    assert again["checked_against"] == [str(frozen)]
    redrawn = [json.loads(line) for p in ("b-common", "b-rare") for line in (tmp_path / f"{p}.jsonl").open()]
    assert not {fields_key(r["input"]) for r in redrawn} & {fields_key(r["input"]) for r in common[::2]}
    assert write_capped_pool(tmp_path / "c", seed=3, quota=4, draws=20_005) == first | {
        "files": {k: {**v, "path": v["path"].replace("/a-", "/c-")} for k, v in first["files"].items()}}


def test_splits_skip_the_cases_of_frozen_pools(tmp_path: Path) -> None:
    first = tmp_path / "first"
    write_splits(first, seed=4, n_train=66, n_val=0, n_eval=0, mode="recipe")
    taken = frozen_keys_of([first / "train.jsonl", tmp_path / "missing.jsonl"])
    assert len(taken) == 66
    # the same seed draws the same cases: against the first pool, every one of them is redrawn
    write_splits(tmp_path / "again", seed=4, n_train=66, n_val=0, n_eval=0, mode="recipe",
                 frozen_fields=taken)
    again = {fields_key(json.loads(line)["input"]) for line in (tmp_path / "again" / "train.jsonl").open()}
    assert len(again) == 66 and not again & taken


def test_a_bad_row_of_a_pool_to_avoid_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "pool.jsonl"
    bad.write_text('{"input": {"region": "EU"}}\n')
    with pytest.raises(FrozenSetError, match=r"pool\.jsonl:1"):
        frozen_keys_of([bad])


def test_limit_twins_mirror_each_escalation_over_the_limit_just_under_it(tmp_path: Path) -> None:
    manifest = write_capped_pool(tmp_path / "p", seed=5, quota=6, draws=30_000, twins=True)
    pool = [json.loads(line) for p in ("p-common", "p-rare") for line in (tmp_path / f"{p}.jsonl").open()]
    twins = [json.loads(line) for line in (tmp_path / "p-twins.jsonl").open()]
    over = [r for r in pool if "LIM-1" in r["output"]["policy_refs"]]
    assert over and len(twins) == len(over) == manifest["files"]["twins"]["rows"]
    for row, twin in zip(over, twins, strict=True):
        case, original = parse_case(twin["input"]), parse_case(row["input"])
        limit = AUTO_LIMIT[case.region]
        assert 0.9 * limit <= case.order.price <= limit < original.order.price
        # only the price (and so the message) moved; the answer is the refund the limit stopped
        moved = {**twin["input"], "case_id": row["input"]["case_id"], "message": row["input"]["message"]}
        assert moved == {**row["input"], "order": {**row["input"]["order"], "price": case.order.price}}
        refund = expected_decision(case).decision
        assert twin["output"]["decision"] == refund in ("APPROVE_REFUND", "APPROVE_REFUND_WITH_FEE")
        assert "LIM-1" not in twin["output"]["policy_refs"]
        assert twin["id"].startswith("C-TR-T") and twin["input"]["message"]
    # a third exactly at the limit, and no twin shares its deciding fields with the pool or the frozen sets
    at_limit = sum(parse_case(t["input"]).order.price == AUTO_LIMIT[t["input"]["region"]] for t in twins)
    assert 0.15 < at_limit / len(twins) < 0.5
    keys = {fields_key(r["input"]) for r in pool}
    assert not keys & {fields_key(t["input"]) for t in twins}
    frozen = tmp_path / "frozen.jsonl"
    frozen.write_text("".join(json.dumps(t) + "\n" for t in twins[:3]))
    again = limit_twins(pool, seed=5, frozen_fields=frozen_keys_of([frozen]))
    assert len(again) == len(twins) - 3 and again[0]["input"]["order"] == twins[3]["input"]["order"]
