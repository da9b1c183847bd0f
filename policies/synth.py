"""The synthetic SFT dataset: cases targeted at each deciding rule, labelled by the rule engine.

    uv run python scripts/generate_sft_dataset.py --out data/generated --seed 0

:func:`sample_case` draws a valid case whose expected decision comes from a chosen rule chain
(``"RET-3"``, ``"RET-3+LIM-1"``, ...) by sampling fields aimed at that rule and checking
with :func:`~policies.rules.expected_decision` (rejection sampling). Boundary days and prices
around each region's AUTO_LIMIT are over-sampled. :func:`generate_rows` balances a split over
:data:`TARGETS`; :func:`write_splits` writes ``train/validation/eval.jsonl`` and a manifest, no two
splits sharing a case by id, message, case or the model's view of it (:mod:`policies.leakage`: the
deciding fields, and the prompt in every known format).
:func:`iter_lm_texts` yields case-only text (no answers) for pretraining a base model.

Same seed, same sizes -> byte-identical files: every random draw comes from a
``random.Random`` seeded with a string, and nothing depends on set or hash order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from policies.catalog import BOUNDARY_DAYS, FX, ITEMS, REFUND_RULES, TARGETS
from policies.leakage import KNOWN_FORMATS, fields_key, prompt_key
from policies.prompt import INSTRUCTIONS, PromptFormat, case_json
from policies.rules import AUTO_LIMIT, expected_decision
from policies.schema import CURRENCY_OF_REGION, REASONS_BY_REQUEST_TYPE, REGIONS, Case, parse_case
from policies.synth_independent import independent_rows
from policies.synth_text import customer_message, reference_answer

__all__ = [
    "BOUNDARY_DAYS", "TARGETS", "DatasetLeakage", "check_leakage", "generate_rows", "iter_lm_texts",
    "reference_answer", "sample_case", "write_splits",
]


MAX_TRIES = 5000  # per case; the rarest target needs a few dozen

WARRANTY_CATS = ("electronics", "home")
OTHER_CATS = ("apparel", "beauty", "grocery", "digital")
CHANGE_OF_MIND_CATS = ("electronics", "home", "apparel", "beauty")  # not grocery/digital (RET-7)
SELLER_FAULT_REASONS = ("defective", "damaged_in_transit", "wrong_item")

# Per deciding rule: the field values that make it reachable. Missing keys are drawn freely;
# expected_decision has the last word.
_RET, _ALL_CATS = ("return", "exchange"), tuple(ITEMS)
RECIPES: dict[str, dict[str, Any]] = {
    "GEN-1": {"request_type": ("return", "exchange", "warranty"), "status": ("delivered",), "days": None},
    "FRD-1": {"request_type": ("unauthorized_charge",)},
    "FRD-2": {"claims": (5, 14)},
    "FRD-3": {"request_type": ("not_received",), "claims": (3, 4), "days_range": (0, 45)},
    "CAN-1": {"request_type": ("cancellation",), "status": ("processing",)},
    "CAN-2": {"request_type": ("cancellation",), "status": ("shipped",), "region": ("UK", "EU")},
    "CAN-3": {"request_type": ("cancellation",), "status": ("shipped", "delivered"), "days_range": (0, 40)},
    "NRC-1": {"request_type": ("not_received",), "status": ("processing", "shipped")},
    "NRC-2": {"request_type": ("not_received",), "status": ("delivered",), "signature": True,
              "days_range": (0, 45)},
    "NRC-3": {"request_type": ("not_received",), "status": ("delivered",), "signature": False,
              "days_range": (0, 45)},
    "WAR-1": {"request_type": ("warranty",), "status": ("processing", "shipped")},
    "WAR-2": {"request_type": ("warranty",), "status": ("delivered",), "category": OTHER_CATS},
    "WAR-3": {"request_type": ("warranty",), "status": ("delivered",), "category": WARRANTY_CATS,
              "days_range": (300, 1000)},
    "WAR-4": {"request_type": ("warranty",), "status": ("delivered",), "category": WARRANTY_CATS,
              "reason": SELLER_FAULT_REASONS},
    "WAR-5": {"request_type": ("warranty",), "status": ("delivered",), "category": WARRANTY_CATS,
              "reason": ("other",)},
    "WAR-6": {"request_type": ("warranty",), "status": ("delivered",), "category": WARRANTY_CATS,
              "reason": ("accidental_damage", "changed_mind")},
    "RET-1": {"request_type": _RET, "status": ("processing", "shipped")},
    "RET-2": {"request_type": _RET, "status": ("delivered",), "reason": ("other",)},
    "RET-3": {"request_type": _RET, "status": ("delivered",), "reason": SELLER_FAULT_REASONS,
              "days_range": (0, 61)},
    "RET-4": {"request_type": _RET, "status": ("delivered",), "reason": SELLER_FAULT_REASONS,
              "category": WARRANTY_CATS, "days_range": (14, 731)},
    "RET-5": {"request_type": _RET, "status": ("delivered",), "reason": SELLER_FAULT_REASONS,
              "days_range": (14, 1000)},
    "RET-6": {"request_type": _RET, "status": ("delivered",), "reason": ("accidental_damage",)},
    "RET-7": {"request_type": _RET, "status": ("delivered",), "reason": ("changed_mind",),
              "category": ("grocery", "digital")},
    "RET-8": {"request_type": _RET, "status": ("delivered",), "reason": ("changed_mind",),
              "region": ("UK", "EU"), "category": CHANGE_OF_MIND_CATS, "days_range": (0, 15)},
    "RET-9": {"request_type": _RET, "status": ("delivered",), "reason": ("changed_mind",),
              "category": CHANGE_OF_MIND_CATS, "final_sale": True},
    "RET-10": {"request_type": _RET, "status": ("delivered",), "reason": ("changed_mind",),
               "category": CHANGE_OF_MIND_CATS, "final_sale": False, "days_range": (13, 400)},
    "RET-11": {"request_type": ("return", "return", "exchange"), "status": ("delivered",),
               "reason": ("changed_mind",),
               "category": ("electronics",), "final_sale": False, "opened": True, "days_range": (0, 46)},
    "RET-12": {"request_type": _RET, "status": ("delivered",), "reason": ("changed_mind",),
               "category": CHANGE_OF_MIND_CATS, "final_sale": False, "days_range": (0, 61)},
}


def _draw_days(rng: random.Random, lo: int, hi: int) -> int:
    """A day count in [lo, hi]: often a boundary day, else mostly recent, sometimes long ago."""
    edges = [d for d in BOUNDARY_DAYS if lo <= d <= hi]
    roll = rng.random()
    if edges and roll < 0.45:
        return rng.choice(edges)
    if roll < 0.8:
        return rng.randint(lo, min(hi, max(lo, 60)))
    return rng.randint(lo, hi)


def _retail(rng: random.Random, amount: float) -> float:
    """``amount`` with a shop-like ending (.99, .00, .50, ...)."""
    return max(1, int(amount)) + rng.choice((0.99, 0.0, 0.5, 0.95, 0.49))


def _draw_price(rng: random.Random, mode: str, limit: float, lo: float, hi: float) -> float | None:
    """A local price for ``mode``: "normal" in the item's range, "near" in [90%, 100%] of the limit,
    "over" above it (often by a cent or a few); None when the item cannot plausibly cost that."""
    if mode == "near":
        exact = rng.random() < 0.25
        price = float(limit) if exact else min(_retail(rng, rng.uniform(0.9 * limit, limit)), limit)
    elif mode == "over":
        if rng.random() < 0.3:
            price = limit + rng.choice((0.01, 0.5, 0.99, 1.0, 5.0))
        else:
            price = max(_retail(rng, rng.uniform(limit, 1.6 * limit)), limit + 0.99)
    else:
        price = _retail(rng, rng.uniform(lo, hi))
    if mode != "normal" and not lo <= price <= hi * 1.1:
        return None
    return round(float(price), 2)


def _price_mode(rng: random.Random, target: str) -> str:
    if target.endswith("+LIM-1"):
        return "over"
    if target in REFUND_RULES:
        return "near" if rng.random() < 0.3 else "normal"
    roll = rng.random()
    return "near" if roll < 0.05 else "over" if roll < 0.1 else "normal"


def _draw_fields(rng: random.Random, target: str, case_id: str) -> dict[str, Any] | None:
    """A case dict aimed at ``target`` (message empty), or None when the draw cannot reach it."""
    recipe = RECIPES[target.removesuffix("+LIM-1")]
    pick = rng.choice
    region = pick(recipe.get("region", REGIONS))
    request_type = pick(recipe.get("request_type", tuple(REASONS_BY_REQUEST_TYPE)))
    reasons = tuple(r for r in recipe.get("reason", REASONS_BY_REQUEST_TYPE[request_type])
                    if r in REASONS_BY_REQUEST_TYPE[request_type])
    if not reasons:
        return None
    status = pick(recipe.get("status", ("processing", "shipped", "delivered", "delivered", "delivered")))
    category = pick(recipe.get("category", _ALL_CATS))
    item, lo_usd, hi_usd = pick(ITEMS[category])
    price = _draw_price(rng, _price_mode(rng, target), AUTO_LIMIT[region],
                        lo_usd * FX[region], hi_usd * FX[region])
    if price is None:
        return None
    days = None
    if status == "delivered" and "days" not in recipe:
        days = _draw_days(rng, *recipe.get("days_range", (0, 800)))
    lo_claims, hi_claims = recipe.get("claims", (0, 0))
    if hi_claims:
        claims = rng.randint(lo_claims, hi_claims)
    else:
        claims = rng.choices((0, 1, 2, 3, 4), (60, 20, 10, 6, 4))[0]
    return {
        "case_id": case_id, "region": region, "request_type": request_type, "reason": pick(reasons),
        "message": "",
        "customer": {"id": f"U-{rng.randint(1000, 999_999)}",
                     "tier": rng.choices(("standard", "plus", "vip"), (60, 25, 15))[0],
                     "claims_last_12m": claims},
        "order": {"id": f"O-{rng.randint(10_000, 9_999_999)}", "category": category, "item": item,
                  "price": price, "currency": CURRENCY_OF_REGION[region],
                  "final_sale": recipe.get("final_sale", rng.random() < 0.15), "status": status,
                  "days_since_delivery": days, "opened": recipe.get("opened", rng.random() < 0.5),
                  "signature_confirmed": recipe.get("signature", rng.random() < 0.3)},
    }


def chain_of(case: Case) -> str:
    """The case's deciding rule chain as a target name: ``"RET-3"`` or ``"RET-3+LIM-1"``."""
    return "+".join(expected_decision(case).policy_refs)


def sample_case(rng: random.Random, target_rule: str | None, case_id: str) -> Case:
    """A valid case with a customer message whose deciding rule chain is ``target_rule``.

    ``target_rule`` is one of :data:`TARGETS` (None: a random one). Raises ValueError for an
    unknown target and RuntimeError if MAX_TRIES draws could not reach it (a recipe bug).
    """
    target = target_rule or rng.choice(TARGETS)
    if target not in TARGETS:
        raise ValueError(f"unknown target rule {target!r} (known: {', '.join(TARGETS)})")
    for _ in range(MAX_TRIES):
        fields = _draw_fields(rng, target, case_id)
        if fields is None:
            continue
        case = parse_case(fields)
        if chain_of(case) == target:
            fields["message"] = customer_message(case, rng)
            return parse_case(fields)
    raise RuntimeError(f"could not sample a case for {target!r} in {MAX_TRIES} tries")


def _case_key(case_dict: dict[str, Any]) -> str:
    """The case minus its case_id, as canonical JSON: two rows with the same key are the same case."""
    rest = {k: v for k, v in case_dict.items() if k != "case_id"}
    return json.dumps(rest, sort_keys=True, ensure_ascii=False)


def _balanced_targets(rng: random.Random, n: int) -> list[str]:
    """``n`` targets, each of TARGETS within one of the others' count, in shuffled order."""
    out: list[str] = []
    while len(out) < n:
        block = list(TARGETS)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def generate_rows(n: int, seed: int, split: str = "train", seen_messages: set[str] | None = None,
                  seen_cases: set[str] | None = None,
                  on_row: Callable[[], None] | None = None,
                  frozen_fields: Collection[str] = (), mode: str = "recipe") -> list[dict[str, Any]]:
    """``n`` SFT rows ``{"id", "instruction", "input", "output"}`` balanced over TARGETS.

    ``mode``: ``"recipe"`` aims each draw at a rule with that rule's usual fields; ``"independent"``
    draws every field on its own (:mod:`policies.synth_independent`: no shortcuts to learn).

    Rows whose message or case (minus case_id) is in ``seen_messages`` / ``seen_cases`` are
    redrawn; both sets are updated, so passing the same sets to every split keeps them disjoint.
    A row whose deciding fields (:func:`policies.leakage.fields_key`) are in ``frozen_fields`` (the
    earlier splits') is replaced by a draw from a stream of its own (``seed``, ``split``, index), so
    every other row stays as it was. Case ids are ``C-<split prefix>-<index>``. Deterministic in
    (n, seed, split, seen sets, frozen fields).
    """
    seen_messages = set() if seen_messages is None else seen_messages
    seen_cases = set() if seen_cases is None else seen_cases
    prefix = split[:2].upper()
    if mode == "independent":
        return independent_rows(n, seed, split, seen_messages, frozen_fields, on_row)
    if mode != "recipe":
        raise ValueError(f"mode: {mode!r} is not recipe or independent")
    rng = random.Random(f"policyops-synth:{seed}:{split}")
    rows = []
    for i, target in enumerate(_balanced_targets(rng, n)):
        case_id = f"C-{prefix}-{i:05d}"
        draw = rng
        while True:
            case = sample_case(draw, target, case_id)
            data = case.to_json_dict()
            key = _case_key(data)
            if case.message in seen_messages or key in seen_cases:
                continue
            if fields_key(case) not in frozen_fields:
                break
            if draw is rng:  # the replacement's own stream, started once per row
                draw = random.Random(f"policyops-synth:{seed}:{split}:replace:{i}")
        seen_messages.add(case.message)
        seen_cases.add(key)
        answer = reference_answer(case)
        rows.append({"id": case_id, "instruction": INSTRUCTIONS, "input": data,
                     "output": answer.model_dump(mode="json")})
        if on_row:
            on_row()
    return rows


class DatasetLeakage(ValueError):
    """The same case (id, message, case minus id, deciding fields or prompt) appears in two splits."""

    def __init__(self, overlaps: list[tuple[str, str, str]]):
        self.overlaps = overlaps  # (what, id in one split, id in the other)
        shown = ", ".join(f"{what}: {a} ~ {b}" for what, a, b in overlaps[:20])
        super().__init__(f"{len(overlaps)} overlap(s) between splits: {shown}")


def _format_name(fmt: PromptFormat) -> str:
    return f"prompt[{fmt.policy}/{fmt.instructions}/{fmt.max_message_chars}/{fmt.case}]"


def check_leakage(splits: dict[str, list[dict[str, Any]]],
                  formats: tuple[PromptFormat, ...] = KNOWN_FORMATS) -> None:
    """Raise :class:`DatasetLeakage` naming the ids when an id, message, case (minus id), the deciding
    fields (``fields``) or the prompt in one of ``formats`` (``prompt[...]``) is in two splits."""
    owner: dict[tuple[str, str], tuple[str, str]] = {}
    overlaps = []
    for split, rows in splits.items():
        for row in rows:
            case = row["input"]
            parsed = parse_case(case)
            keys = (("id", row["id"]), ("message", case["message"]), ("case", _case_key(case)),
                    ("fields", fields_key(parsed)),
                    *((_format_name(fmt), prompt_key(parsed, fmt)) for fmt in formats))
            for what, key in keys:
                first = owner.setdefault((what, key), (split, row["id"]))
                if first[0] != split:
                    overlaps.append((what, f"{first[0]}:{first[1]}", f"{split}:{row['id']}"))
    if overlaps:
        raise DatasetLeakage(overlaps)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def rule_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per deciding rule chain (``"RET-3+LIM-1"``), sorted by chain."""
    counts = Counter("+".join(r["output"]["policy_refs"]) for r in rows)
    return dict(sorted(counts.items()))


def write_splits(out_dir: str | Path, seed: int = 0, n_train: int = 3000, n_val: int = 300,
                 n_eval: int = 300, on_row: Callable[[], None] | None = None,
                 mode: str = "recipe", frozen_fields: Collection[str] = ()) -> dict[str, Any]:
    """Write ``train.jsonl``, ``validation.jsonl``, ``eval.jsonl`` and ``manifest.json``; return the manifest.

    Eval is drawn first, then validation, then train, each deduplicated against the ones before
    (by message, case minus id, and deciding fields: a row whose fields an earlier split holds is
    replaced, the other rows staying as they were), so the eval set does not change when the train
    size does. Equal deciding fields imply an equal prompt in every format, so no split shares a
    model prompt with another either. Raises :class:`DatasetLeakage` if any case ended up in two
    splits (checked by every key, prompts in :data:`policies.leakage.KNOWN_FORMATS` included).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen_messages: set[str] = set()
    seen_cases: set[str] = set()
    earlier_fields: set[str] = set(frozen_fields)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, n in (("eval", n_eval), ("validation", n_val), ("train", n_train)):
        rows = generate_rows(n, seed, split, seen_messages, seen_cases, on_row,
                             frozen_fields=frozenset(earlier_fields), mode=mode)
        earlier_fields.update(fields_key(row["input"]) for row in rows)
        splits[split] = rows
    check_leakage(splits)
    files = {}
    for split in ("train", "validation", "eval"):
        data = _jsonl(splits[split])
        (out / f"{split}.jsonl").write_bytes(data)
        files[split] = {"path": f"{split}.jsonl", "rows": len(splits[split]),
                        "sha256": hashlib.sha256(data).hexdigest(), "rules": rule_counts(splits[split])}
    manifest = {"generator": "policies.synth", "seed": seed, "targets": list(TARGETS), "files": files}
    if mode != "recipe":  # recipe manifests stay byte-identical to those written before modes existed
        manifest["mode"] = mode
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    return manifest


def iter_lm_texts(n: int, seed: int, exclude: Callable[[Case], object] | None = None) -> Iterator[str]:
    """``n`` case-only texts for pretraining a base language model: no decisions, no answers.

    Each text is one case as the prompt shows it (:func:`policies.prompt.case_json`, compact JSON
    with the customer message last), drawn balanced over TARGETS from a stream of its own
    (``seed`` namespaced ``lm``). ``exclude`` says which cases to redraw (truthy: redraw): pass
    ``FrozenKeys.match_case`` of the held-out files (:func:`policies.leakage.frozen_keys`) so the
    base model never sees a held-out case, not even under other ids and message.
    """
    rng = random.Random(f"policyops-synth:{seed}:lm")
    for i, target in enumerate(_balanced_targets(rng, n)):
        while True:
            case = sample_case(rng, target, f"C-LM-{i:06d}")
            if exclude is None or not exclude(case):
                break
        yield case_json(case)
