"""Generate the synthetic SFT dataset (train/validation/eval JSON Lines plus a manifest), or the
out-of-distribution stress set.

    # A training pool: every field drawn on its own (the default, --mode independent):
    uv run python scripts/generate_sft_dataset.py --out runs/data/ind-s5-24k --seed 5 --train 24000

    # A recipe-drawn training pool that shares no case with the frozen sets:
    uv run python scripts/generate_sft_dataset.py --out runs/data/rec-s63 --seed 63 --mode recipe \
        --train 12000 --validation 0 --eval 0 \
        --against data/generated/eval.jsonl data/generated/stress.jsonl \
        data/generated/validation.jsonl data/generated/validation_independent.jsonl

    # The frozen splits in data/generated/ (recipe mode, seed 0):
    uv run python scripts/generate_sft_dataset.py --out data/generated --seed 0 --mode recipe \
        --train 3000 --validation 300 --eval 300

    # The frozen stress set: 300 independent cases from their own seed, none sharing its deciding
    # fields with the committed splits:
    uv run python scripts/generate_sft_dataset.py --stress-out data/generated/stress.jsonl --seed 1000 \
        --against data/generated/train.jsonl data/generated/validation.jsonl data/generated/eval.jsonl

    # The console's demo queue (data/generated/demo.jsonl): 48 independent cases from their own seed,
    # none sharing its deciding fields with the committed splits or the stress set, so reviews of
    # them can be exported and trained on:
    uv run python scripts/generate_sft_dataset.py --demo-out data/generated/demo.jsonl --seed 2000 \
        --against data/generated/train.jsonl data/generated/validation.jsonl data/generated/eval.jsonl \
        data/generated/stress.jsonl data/generated/validation_independent.jsonl

    # A capped training pool (fixed cost; issue 15's stage 5 and 6): independent draws, at most QUOTA
    # rows per rule chain, stopped after DRAWS draws; chains too rare to fill go to PREFIX-rare.jsonl:
    uv run python scripts/generate_sft_dataset.py --pool-out runs/data/ind-s62/pool --seed 62 \
        --quota 1000 --draws 6000000 --against data/generated/eval.jsonl data/generated/stress.jsonl \
        data/generated/validation_independent.jsonl data/generated/validation.jsonl
    # ... with --limit-twins: also PREFIX-twins.jsonl, every LIM-1 case (a refund over the region's
    # AUTO_LIMIT, escalated) again at or just under the limit, answered as the refund it then is.

Same seed, mode and sizes -> byte-identical files. The logic lives in :mod:`policies.synth` and
:mod:`policies.synth_independent`.
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from engine.cli import MAX_ROWS, bounded_int, existing_file
from policies.synth import write_splits
from policies.synth_independent import frozen_keys_of, write_capped_pool, write_stress_set


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/generated", help="output folder")
    parser.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0, help="random seed")
    parser.add_argument("--mode", choices=("independent", "recipe"), default="independent",
                        help="independent: every field on its own (no shortcuts); recipe: fields aimed "
                             "at each rule (how the frozen splits were made)")
    parser.add_argument("--train", type=bounded_int(0, MAX_ROWS), default=3000, help="rows in train.jsonl")
    parser.add_argument("--validation", type=bounded_int(0, MAX_ROWS), default=300,
                        help="rows in validation.jsonl")
    parser.add_argument("--eval", type=bounded_int(0, MAX_ROWS), default=300, help="rows in eval.jsonl")
    parser.add_argument("--stress-out", default=None, help="write the stress set to this file instead")
    parser.add_argument("--stress-size", type=bounded_int(1, MAX_ROWS), default=300,
                        help="rows in the stress set")
    parser.add_argument("--demo-out", default=None,
                        help="write the console's demo queue to this file instead")
    parser.add_argument("--demo-size", type=bounded_int(1, MAX_ROWS), default=48,
                        help="rows in the demo queue")
    parser.add_argument("--against", nargs="*", default=[], type=existing_file,
                        help="pools the new rows may not share a case with (deciding fields, so prompts)")
    parser.add_argument("--pool-out", default=None,
                        help="write a capped training pool as POOL_OUT-common.jsonl and POOL_OUT-rare.jsonl")
    parser.add_argument("--quota", type=bounded_int(1, 100_000_000), default=500,
                        help="capped pool: rows per rule chain at most")
    parser.add_argument("--draws", type=bounded_int(1, 100_000_000), default=3_000_000,
                        help="capped pool: independent draws")
    parser.add_argument("--limit-twins", action="store_true",
                        help="capped pool: also write PREFIX-twins.jsonl, each LIM-1 case again at or "
                             "just under its region's AUTO_LIMIT (policies.synth_independent.limit_twins)")
    args = parser.parse_args(argv)
    if not args.pool_out and not args.stress_out and not args.demo_out \
            and args.train + args.validation + args.eval == 0:
        parser.error("--train, --validation, --eval: all three are 0; nothing to write")
    if args.pool_out:
        with tqdm(total=args.draws, unit="draw", desc="independent draws") as bar:
            manifest = write_capped_pool(args.pool_out, args.seed, args.quota, args.draws, args.against,
                                         on_draw=bar.update, twins=args.limit_twins)
        print(json.dumps(manifest))
        return
    if args.stress_out or args.demo_out:
        split, out, size = ("demo", args.demo_out, args.demo_size) if args.demo_out else \
            ("stress", args.stress_out, args.stress_size)
        with tqdm(total=size, unit="row", desc=f"{split} cases") as bar:
            manifest = write_stress_set(out, args.seed, size, args.against, on_row=bar.update, split=split)
        print(json.dumps({k: v for k, v in manifest.items() if k != "rules"}))
        print(json.dumps(manifest["rules"]))
        return
    with tqdm(total=args.train + args.validation + args.eval, unit="row", desc="cases") as bar:
        manifest = write_splits(args.out, seed=args.seed, n_train=args.train, n_val=args.validation,
                                n_eval=args.eval, on_row=bar.update, mode=args.mode,
                                frozen_fields=frozen_keys_of(args.against))
    for split, info in manifest["files"].items():
        print(f"{split}: {info['rows']} rows, sha256 {info['sha256'][:16]}...")
    print(json.dumps(manifest["files"]["train"]["rules"]))


if __name__ == "__main__":
    main()
