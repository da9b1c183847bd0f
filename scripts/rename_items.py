"""Give a generator file's items names our catalogue does not have (policies/item_names.py).

    # a training pool with half its items renamed from the training nouns
    uv run python scripts/rename_items.py runs/data/ind-s78/pool-common.jsonl \
        runs/data/ind-s78/pool-common-open.jsonl --share 0.5 --names train --seed 78
    # the renamed copies of the frozen sets (every item; held-out nouns)
    uv run python scripts/rename_items.py data/generated/validation.jsonl \
        data/generated/validation_renamed.jsonl --names validation --seed 1
    uv run python scripts/rename_items.py data/generated/stress.jsonl \
        data/generated/stress_renamed.jsonl --names test --seed 1

Only the item's name moves (in the case, the customer message and the rule engine's answer), so each
row keeps its decision and deciding fields; ids are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cli import bounded_float, bounded_int, existing_file  # noqa: E402
from engine.sft_data import read_rows  # noqa: E402
from engine.types import DatasetError  # noqa: E402
from policies.item_names import NAME_SPLITS, NAME_STYLES, rename_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=existing_file, help="generator JSONL")
    p.add_argument("out", type=Path, help="the renamed JSONL")
    p.add_argument("--share", type=bounded_float(0.0, 1.0), default=1.0, help="share of rows renamed")
    p.add_argument("--names", choices=NAME_SPLITS, required=True,
                   help="whose nouns: train for training pools, validation / test for measurement sets")
    p.add_argument("--style", choices=NAME_STYLES, default="plain",
                   help="plain names ('Compact soundbar'), catalogue titles ('Brightline Z9407 desk – navy, "
                        "500 ml') or mixed (either, by a coin)")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0)
    a = p.parse_args(argv)
    if Path(a.out).resolve() == Path(a.src).resolve():
        p.error(f"argument out: {a.out} is the input file; write the renamed rows elsewhere")
    try:
        rows = read_rows(a.src, lambda row, _path, _line: row, "the file has no rows")  # names a bad line
        out = rename_rows(rows, a.seed, a.share, a.names, a.style)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        where = "" if isinstance(exc, DatasetError) else f"{a.src}: "  # a DatasetError names path:line
        print(f"error: {where}{exc}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    renamed = sum(r is not s for r, s in zip(out, rows, strict=True))
    print(f"wrote {len(out)} rows to {a.out}; {renamed} renamed from the {a.names} words ({a.style})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
