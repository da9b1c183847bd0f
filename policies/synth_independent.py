"""Cases that teach no shortcuts: every field drawn on its own, over its whole valid range.

The recipe generator (:mod:`policies.synth`) aims each draw at a rule with that rule's usual fields
(an item's usual price, a rule's usual day range and categories), so fields travel together and a
small model learns those pairings instead of the comparison the rule makes. Here every field is
drawn independently of every other: any region, request type and allowed reason; any category and
any item of it at any price, from a few units to three times the region's AUTO_LIMIT; any order
status; a day count from 0 to 1,100 (well past the 730-day warranty); any tier, claim count and
flags. Boundaries are over-sampled, each on its own: window and warranty days (a coin, not the
rule, decides a boundary day), prices just around the case's own region's AUTO_LIMIT (the comparison
LIM-1 makes, whatever the item), and claim counts around the fraud thresholds.
:func:`independent_cases` balances over deciding rule chains by rejection: a draw is kept only
while the rule engine's chain for it still needs cases, so the fields that do not decide a case keep their
independent distribution given the chain.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from policies.catalog import BOUNDARY_DAYS, ITEMS, TARGETS
from policies.leakage import fields_key, frozen_keys
from policies.prompt import INSTRUCTIONS
from policies.rules import AUTO_LIMIT, expected_decision
from policies.schema import (
    CATEGORIES,
    CURRENCY_OF_REGION,
    ORDER_STATUSES,
    REASONS_BY_REQUEST_TYPE,
    REGIONS,
    TIERS,
    Case,
    Customer,
    Order,
    parse_case,
)
from policies.synth_text import customer_message, reference_answer

MAX_DAYS = 1100  # well past the 730-day warranty
CLAIM_EDGES: tuple[int, ...] = (2, 3, 4, 5, 6)  # around the fraud thresholds (3 and 5 claims)
MAX_CLAIMS = 15
MAX_TRIES = 500_000  # per case; the rarest chains need tens of thousands of independent draws
P_BOUNDARY_DAY, P_NEAR_LIMIT, P_CLAIM_EDGE = 0.35, 0.35, 0.3
P_NO_DAYS = 0.05  # a delivered order whose delivery day is missing (GEN-1's missing data)
# Most orders have arrived and most customers claim rarely; every value stays possible, and each is
# drawn without looking at any other field.
STATUS_WEIGHT = {"processing": 1, "shipped": 1, "delivered": 3}
_CLAIMS = tuple(range(MAX_CLAIMS + 1))
_CLAIM_WEIGHTS = tuple(1 / (k + 1) ** 1.5 for k in _CLAIMS)

# Item names per category: the names only, never their usual price.
ITEM_NAMES: dict[str, tuple[str, ...]] = {
    category: tuple(name for name, _, _ in items) for category, items in ITEMS.items()
}


def _price(rng: random.Random, limit: float) -> float:
    """A local price: often just around ``limit`` (the case's own region's AUTO_LIMIT), else
    log-uniform from 2 to 3x the limit."""
    if rng.random() < P_NEAR_LIMIT:
        roll = rng.random()
        if roll < 0.2:
            return float(limit)
        if roll < 0.4:
            return round(limit + rng.choice((0.01, 0.5, 0.99, 1.0)), 2)
        return round(rng.uniform(0.9 * limit, 1.1 * limit), 2)
    return round(2 * (1.5 * limit) ** rng.random(), 2)  # 2 .. 3x the limit, log-uniform


def independent_fields(rng: random.Random, case_id: str) -> dict[str, Any]:
    """One case dict with every field drawn on its own (message empty)."""
    pick = rng.choice
    region = pick(REGIONS)
    request_type = pick(tuple(REASONS_BY_REQUEST_TYPE))
    category = pick(CATEGORIES)
    status = rng.choices(ORDER_STATUSES, [STATUS_WEIGHT[s] for s in ORDER_STATUSES])[0]
    days = None
    if status == "delivered" and rng.random() >= P_NO_DAYS:
        days = pick(BOUNDARY_DAYS) if rng.random() < P_BOUNDARY_DAY else rng.randint(0, MAX_DAYS)
    claims = pick(CLAIM_EDGES) if rng.random() < P_CLAIM_EDGE else rng.choices(_CLAIMS, _CLAIM_WEIGHTS)[0]
    return {
        "case_id": case_id, "region": region, "request_type": request_type,
        "reason": pick(REASONS_BY_REQUEST_TYPE[request_type]), "message": "",
        "customer": {"id": f"U-{rng.randint(1000, 999_999)}", "tier": pick(TIERS), "claims_last_12m": claims},
        "order": {"id": f"O-{rng.randint(10_000, 9_999_999)}", "category": category,
                  "item": pick(ITEM_NAMES[category]), "price": _price(rng, AUTO_LIMIT[region]),
                  "currency": CURRENCY_OF_REGION[region], "final_sale": rng.random() < 0.5,
                  "status": status, "days_since_delivery": days, "opened": rng.random() < 0.5,
                  "signature_confirmed": rng.random() < 0.5},
    }


def _chain(fields: dict[str, Any]) -> str:
    """The deciding rule chain of a draw, without validating it (rejection sampling's hot loop; the
    draw is valid by construction and is validated by parse_case once kept)."""
    case = Case.model_construct(**{**fields, "customer": Customer.model_construct(**fields["customer"]),
                                   "order": Order.model_construct(**fields["order"])})
    return "+".join(expected_decision(case).policy_refs)


def _draw_by_chain(
    rng: random.Random,
    quota: dict[str, int],
    keep: Callable[[Case], bool],
    max_draws: int,
    stop_when_full: bool = True,
    on_case: Callable[[], None] | None = None,
    on_draws: Callable[[int], None] | None = None,
) -> dict[str, list[Case]]:
    """Independent draws kept by their deciding rule chain: at most ``quota[chain]`` cases per chain
    (a draw of a full or unlisted chain is dropped, so common chains cost nothing extra), each with
    a customer message, ``keep(case)`` refusing a draw (deduplication). Stops after ``max_draws``
    draws, or earlier once every quota is met when ``stop_when_full``. ``on_case()`` after each kept
    case; ``on_draws(k)`` every 10,000 draws and once at the end, so the k add up to the draws."""
    picked: dict[str, list[Case]] = {t: [] for t in quota}
    missing, tries = sum(quota.values()), 0
    while tries < max_draws and (missing or not stop_when_full):
        tries += 1
        if on_draws and tries % 10_000 == 0:
            on_draws(10_000)
        fields = independent_fields(rng, "C-0")
        chain = _chain(fields)
        if len(picked.get(chain, ())) >= quota.get(chain, 0):
            continue
        case = parse_case(fields)
        fields["message"] = customer_message(case, rng)
        case = parse_case(fields)
        if not keep(case):
            continue
        picked[chain].append(case)
        missing -= 1
        if on_case:
            on_case()
    if on_draws and tries % 10_000:
        on_draws(tries % 10_000)
    return picked


def _unseen(frozen_fields: Collection[str] = (),
            seen_messages: set[str] | None = None) -> Callable[[Case], bool]:
    """A ``keep`` for :func:`_draw_by_chain`: refuses a case whose message was seen (``seen_messages``,
    updated) or whose deciding fields (:func:`policies.leakage.fields_key`) are frozen or were kept
    already; remembers each case it keeps."""
    seen_messages = set() if seen_messages is None else seen_messages
    seen_fields: set[str] = set()

    def keep(case: Case) -> bool:
        key = fields_key(case)
        if case.message in seen_messages or key in frozen_fields or key in seen_fields:
            return False
        seen_messages.add(case.message)
        seen_fields.add(key)
        return True

    return keep


def independent_cases(
    rng: random.Random,
    targets: tuple[str, ...],
    n: int,
    keep: Callable[[Case], bool] = lambda case: True,
    on_case: Callable[[], None] | None = None,
) -> list[Case]:
    """``n`` cases balanced over ``targets`` (each chain within one of the others), in shuffled order,
    ids ``C-0``, ``C-1``, ... (callers rename them). Every draw counts towards its own chain's quota
    (a draw of a full or unlisted chain is dropped), so common chains cost nothing extra and the
    rarest sets the pace. ``keep(case)`` may refuse a draw (deduplication). Deterministic in ``rng``.
    """
    quota = {t: n // len(targets) + (i < n % len(targets)) for i, t in enumerate(targets)}
    budget = MAX_TRIES * max(1, n)
    picked = _draw_by_chain(rng, quota, keep, budget, on_case=on_case)
    short = {t: quota[t] - len(c) for t, c in picked.items() if len(c) < quota[t]}
    if short:
        raise RuntimeError(f"could not draw enough independent cases in {budget} tries: {short}")
    cases = [case for t in targets for case in picked[t]]
    rng.shuffle(cases)
    return [case.model_copy(update={"case_id": f"C-{i}"}) for i, case in enumerate(cases)]


def _row(case: Case) -> dict[str, Any]:
    """A generator row ``{"id", "instruction", "input", "output"}``: the case, answered by the rule engine."""
    return {"id": case.case_id, "instruction": INSTRUCTIONS, "input": case.to_json_dict(),
            "output": reference_answer(case).model_dump(mode="json")}


def independent_rows(n: int, seed: int, split: str, seen_messages: set[str] | None = None,
                     frozen_fields: Collection[str] = (),
                     on_row: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """``n`` generator rows ``{"id", "instruction", "input", "output"}`` of independent cases balanced
    over TARGETS, ids ``C-<split prefix>-<index>``, answers by the rule engine. A draw whose message
    is in ``seen_messages`` (updated) or whose deciding fields (:func:`policies.leakage.fields_key`)
    are in ``frozen_fields`` or already in the rows is dropped. Deterministic in (n, seed, split, sets).
    """
    rng = random.Random(f"policyops-synth-independent:{seed}:{split}")
    rows = []
    keep = _unseen(frozen_fields, seen_messages)
    for i, case in enumerate(independent_cases(rng, TARGETS, n, keep, on_row)):
        rows.append(_row(case.model_copy(update={"case_id": f"C-{split[:2].upper()}-{i:05d}"})))
    return rows


def write_stress_set(path: str | Path, seed: int, n: int = 300,
                     against: Collection[str | Path] = (),
                     on_row: Callable[[], None] | None = None, split: str = "stress") -> dict[str, Any]:
    """Write the out-of-distribution test set: ``n`` independent cases from their own ``seed``, none
    sharing its deciding fields (so none its prompt, in any format) with a row of the ``against``
    pools (generator JSONL files; missing ones are skipped). Out: a manifest of the file.
    ``split`` names the set in the case ids (``C-ST-00000``; the console's demo queue: ``demo``)."""
    frozen, checked = _frozen_keys(against)
    rows = independent_rows(n, seed, split, frozen_fields=frozen, on_row=on_row)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    chains = Counter("+".join(r["output"]["policy_refs"]) for r in rows)
    return {"path": str(path), "rows": len(rows), "seed": seed, "mode": "independent",
            "sha256": hashlib.sha256(data).hexdigest(), "checked_against": checked,
            "rules": dict(sorted(chains.items()))}


def frozen_keys_of(against: Collection[str | Path]) -> set[str]:
    """Deciding-field keys (:func:`policies.leakage.fields_key`) of every row of the ``against``
    generator files (missing files are skipped)."""
    return _frozen_keys(against)[0]


def _frozen_keys(against: Collection[str | Path]) -> tuple[set[str], list[str]]:
    """Deciding-field keys of every row in the ``against`` pools and the files read (missing ones
    are skipped); a bad row raises :class:`policies.leakage.FrozenSetError` naming ``path:line``."""
    frozen = frozen_keys(against)
    return set(frozen.fields), frozen.paths


def capped_pool(seed: int, quota: int, draws: int, frozen_fields: Collection[str] = (),
                on_draw: Callable[[int], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """A training pool of independent draws with a fixed cost: at most ``quota`` rows per rule chain,
    stopped after ``draws`` draws (the exactly balanced :func:`independent_rows` waits for the
    rarest chain, 1 draw in ~50,000). Out: ``{"common": rows, "rare": rows}``: the chains that
    filled their quota and those too rare to fill it in the budget (train them with a higher mixing
    weight). No row shares its deciding fields (so its prompt) with ``frozen_fields``
    (:func:`frozen_keys_of` other pools) nor its fields or message with another row. ``on_draw(k)``
    reports progress every 10,000 draws. Deterministic in (seed, quota, draws, frozen_fields)."""
    rng = random.Random(f"policyops-synth-independent:{seed}:train-capped")
    picked = _draw_by_chain(rng, dict.fromkeys(TARGETS, quota), _unseen(frozen_fields), draws,
                            stop_when_full=False, on_draws=on_draw)
    full = [t for t in TARGETS if len(picked[t]) >= quota]
    pools: dict[str, list[dict[str, Any]]] = {}
    for name, chains in (("common", full), ("rare", [t for t in TARGETS if t not in full])):
        cases = [case for t in chains for case in picked[t]]
        rng.shuffle(cases)
        pools[name] = []
        for i, case in enumerate(cases):
            pools[name].append(_row(case.model_copy(update={"case_id": f"C-TR-{name[0].upper()}{i:05d}"})))
    return pools


def _price_at_or_under(rng: random.Random, limit: float) -> float:
    """A price at or just under ``limit``, in the shapes of :func:`_price`'s near-limit prices (there
    a fifth at the limit, a fifth a few cents to a unit over it, the rest within 10% either side;
    here a third exactly at it, a third a few cents to a unit under it, a third down to 0.9x)."""
    roll = rng.random()
    if roll < 1 / 3:
        return float(limit)
    if roll < 2 / 3:
        return round(limit - rng.choice((0.01, 0.5, 0.99, 1.0)), 2)
    return round(rng.uniform(0.9 * limit, limit), 2)


def limit_twins(rows: list[dict[str, Any]], seed: int,
                frozen_fields: Collection[str] = ()) -> list[dict[str, Any]]:
    """One twin per row that LIM-1 decides (a refund over its region's AUTO_LIMIT, escalated): the
    same case at a price at or just under the limit, with a new customer message and the rule
    engine's answer (the refund the limit stopped). Independent draws put most refund-eligible cases
    near the limit on the escalated side (LIM-1's chains fill their quota from prices just over it),
    and a model taught that way answers ESCALATE at 0.99x and at exactly the limit; the twins give it
    as many refunds just under the limit as escalations just over it. Only the price moves, so no
    other field is tied to the decision. A twin whose deciding fields are in ``frozen_fields`` or in
    ``rows`` (or another twin's) is dropped. Ids ``C-TR-T00000``, ...; deterministic in (rows, seed)."""
    rng = random.Random(f"policyops-synth-independent:{seed}:limit-twins")
    keep = _unseen({*frozen_fields, *(fields_key(row["input"]) for row in rows)})
    twins: list[dict[str, Any]] = []
    for row in rows:
        if "LIM-1" not in row["output"]["policy_refs"]:
            continue
        fields = copy.deepcopy(row["input"])
        fields["order"]["price"] = _price_at_or_under(rng, AUTO_LIMIT[fields["region"]])
        fields["message"] = customer_message(parse_case({**fields, "message": ""}), rng)
        case = parse_case(fields)
        if not keep(case):
            continue
        twins.append(_row(case.model_copy(update={"case_id": f"C-TR-T{len(twins):05d}"})))
    return twins


def write_capped_pool(prefix: str | Path, seed: int, quota: int, draws: int,
                      against: Collection[str | Path] = (),
                      on_draw: Callable[[int], None] | None = None,
                      twins: bool = False) -> dict[str, Any]:
    """Write :func:`capped_pool` as ``PREFIX-common.jsonl`` and ``PREFIX-rare.jsonl`` (with ``twins``,
    also :func:`limit_twins` of both as ``PREFIX-twins.jsonl``); out: a manifest."""
    frozen, checked = _frozen_keys(against)
    pools = capped_pool(seed, quota, draws, frozen, on_draw)
    if twins:
        pools["twins"] = limit_twins(pools["common"] + pools["rare"], seed, frozen)
    files = {}
    for name, rows in pools.items():
        path = Path(f"{prefix}-{name}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        path.write_bytes(data)
        chains = Counter("+".join(r["output"]["policy_refs"]) for r in rows)
        files[name] = {"path": str(path), "rows": len(rows), "sha256": hashlib.sha256(data).hexdigest(),
                       "rules": dict(sorted(chains.items()))}
    return {"seed": seed, "quota": quota, "draws": draws, "mode": "independent-capped",
            "checked_against": checked, "files": files}
