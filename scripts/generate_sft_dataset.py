"""Generate the synthetic SFT dataset (train/validation/eval JSON Lines plus a manifest).

    uv run python scripts/generate_sft_dataset.py --out data/generated --seed 0 \
        --train 3000 --validation 300 --eval 300

Same seed and sizes -> byte-identical files. The logic lives in :mod:`policies.synth`.
"""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from policies.synth import write_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/generated", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--train", type=int, default=3000, help="rows in train.jsonl")
    parser.add_argument("--validation", type=int, default=300, help="rows in validation.jsonl")
    parser.add_argument("--eval", type=int, default=300, help="rows in eval.jsonl")
    args = parser.parse_args()
    with tqdm(total=args.train + args.validation + args.eval, unit="row", desc="cases") as bar:
        manifest = write_splits(args.out, seed=args.seed, n_train=args.train, n_val=args.validation,
                                n_eval=args.eval, on_row=bar.update)
    for split, info in manifest["files"].items():
        print(f"{split}: {info['rows']} rows, sha256 {info['sha256'][:16]}...")
    print(json.dumps(manifest["files"]["train"]["rules"]))


if __name__ == "__main__":
    main()
