"""The shortcuts between case fields in training pools, old (recipe) and new (independent) side by side.

    uv run python scripts/generate_sft_dataset.py --out runs/data/ind-s0-3k --seed 0 --train 3000
    uv run python scripts/correlation_report.py \
        --pool recipe=data/generated/train.jsonl --pool independent=runs/data/ind-s0-3k/train.jsonl \
        --out benchmarks/correlation

Writes OUT.json (every figure) and OUT.md (the table). The figures are policies.correlation's: the
item's information about the price band given the category, and the mutual information of every
pair of case fields (plug-in estimates in bits; compare pools of the same size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli import message
from policies import InvalidInput, parse_case
from policies.correlation import correlation_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", action="append", required=True, help="NAME=generator JSONL file")
    p.add_argument("--out", type=Path, default=Path("benchmarks/correlation"))
    args = p.parse_args(argv)
    reports = {}
    for spec in args.pool:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"--pool: expected NAME=FILE, got {spec!r}")
        if not Path(path).is_file():
            p.error(f"--pool: no such file: {path}")
        cases = []
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    cases.append(parse_case(json.loads(line)["input"]))
                except (json.JSONDecodeError, KeyError, TypeError, InvalidInput) as exc:
                    p.error(f"--pool: {path}:{number}: not a generator row with a case ({message(exc)})")
        reports[name] = {"file": path, **correlation_report(cases)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
    names = list(reports)

    def row(label: str, key: str) -> str:
        return f"| {label} | " + " | ".join(f"{reports[n][key]:.3f}" for n in names) + " |"

    lines = ["| figure (bits) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
             row("I(item; price band \\| category)", "item_price"),
             row("mean I over all field pairs", "mean_pair_mi"),
             "| cases | " + " | ".join(str(reports[n]["n"]) for n in names) + " |"]
    pairs = sorted(reports[names[0]]["pairs"], key=lambda k: -reports[names[0]]["pairs"][k])[:10]
    lines += ["", "| field pair (top 10 in " + names[0] + ") | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    lines += [f"| {pair} | " + " | ".join(f"{reports[n]['pairs'][pair]:.3f}" for n in names) + " |"
              for pair in pairs]
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
