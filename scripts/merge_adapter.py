"""Merge a LoRA adapter into its base (full precision) and verify the merged model answers the same.

# The champion, merged for deployment, checked on 50 validation cases:
uv run python scripts/merge_adapter.py --adapter runs/ft-v2 --out runs/ft-v2-merged \
    --eval-set data/generated/validation.jsonl --check 50

Writes OUT (model.safetensors, config, tokenizer, prompt_format.json, merge_info.json) and
OUT/merge_check.json. Exit status 0 when every checked case gets the same greedy answer from
base+adapter and from the merged model, 1 on any mismatch (listed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.cli import MAX_NEW_TOKENS, bounded_int, existing_file
from engine.merge import merge_adapter, mismatch_report, verify_merge
from engine.metrics import DatasetError, load_rows
from engine.registry import RegistryError, UnknownModel


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapter", required=True, help="adapter dir (adapter_config.json names the base)")
    p.add_argument("--out", required=True, help="where the merged model goes")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="merged weights' dtype")
    p.add_argument("--eval-set", default="data/generated/validation.jsonl", type=existing_file,
                   help="cases to verify the merge on (a dev check: the validation set by default)")
    p.add_argument("--check", type=bounded_int(0, 10_000), default=20,
                   help="how many cases to verify (0: skip)")
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=512)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cases = [case for case, _ in load_rows(args.eval_set, args.check)] if args.check else []
        out = merge_adapter(args.adapter, args.out, args.dtype)  # after the cases: a bad set stops it first
    except (UnknownModel, RegistryError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {args.adapter} into {out}")
    if not cases:
        return 0
    report = mismatch_report(verify_merge(args.adapter, out, cases, args.max_new_tokens), len(cases))
    (Path(out) / "merge_check.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for m in report["details"]:
        print(f"MISMATCH {m['case_id']}: adapter {m['adapter_decision']} / merged {m['merged_decision']}\n"
              f"  adapter: {m['adapter_text'][:200]}\n  merged:  {m['merged_text'][:200]}")
    print(f"{report['cases'] - report['mismatches']}/{report['cases']} cases answer identically "
          f"({report['decision_changes']} decision changes)")
    return 1 if report["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
