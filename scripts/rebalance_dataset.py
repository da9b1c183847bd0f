"""Oversample weak rule chains: every row of the named chains plus a sample of the others.

    uv run python scripts/rebalance_dataset.py runs/data/generated-48k/train.jsonl \
        runs/data/focus-14k.jsonl --weak NRC-3 NRC-3+LIM-1 RET-4 RET-9 --rest 8000 --seed 3

Pick the chains from a validation run (never from the eval set). The logic lives in
:func:`engine.training.oversample_chains`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cli import MAX_ROWS, bounded_int, existing_file  # noqa: E402
from engine.sft_data import ConfigError, oversample_chains, rule_chain  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=existing_file, help="generator JSONL")
    p.add_argument("out", type=Path, help="the rebalanced JSONL")
    p.add_argument("--weak", nargs="+", required=True, help="rule chains to keep whole, e.g. NRC-3+LIM-1")
    p.add_argument("--rest", type=bounded_int(0, MAX_ROWS), required=True,
                   help="rows sampled from the other chains")
    p.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0)
    a = p.parse_args(argv)
    try:
        rows = [json.loads(line) for line in Path(a.src).open(encoding="utf-8") if line.strip()]
        out = oversample_chains(rows, set(a.weak), a.rest, a.seed)
    except (OSError, json.JSONDecodeError, ConfigError) as exc:
        print(f"error: {a.src}: {exc}", file=sys.stderr)
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    counts = Counter(rule_chain(r) for r in out)
    print(f"wrote {len(out)} rows to {a.out}; weak chains: "
          + ", ".join(f"{c} {counts[c]}" for c in sorted(a.weak)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
