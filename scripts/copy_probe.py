"""Can the model copy the item's name from the case into its customer response? (engine.probes)

uv run python scripts/copy_probe.py --model default-ft
uv run python scripts/copy_probe.py --model runs/gd/ft-facts-false --dataset data/generated/validation.jsonl
uv run python scripts/copy_probe.py --model runs/copy-base-after --messages   # a base LM: prompt + message
uv run python scripts/copy_probe.py --model default-ft --target days   # the day count in the reasoning
uv run python scripts/copy_probe.py --model default-ft --target region # the region in the reasoning

Teacher-forced on the dataset's reference answers (validation_independent by default: a set for
choosing, never eval or stress): the share of the item's tokens in the customer response the model
predicts, beside the share of the response's other tokens. ``--messages`` probes a base LM, which
writes no answers: each case's prompt followed by the customer's message, and the item's tokens in
the message against its other tokens. ``--target days`` follows the case's day count in the reasoning
("29 days since delivery") instead of the item (the facts check's ``days``), ``--target region`` the
case's region ("in UK", "the UK AUTO_LIMIT"; the facts check's ``region``). Prints one JSON line;
``--out`` also writes it. A bad dataset line or an unknown model exits with status 1 and ``error: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from engine.cli import MAX_ROWS, bounded_int, existing_file
from engine.probes import (
    COPY_TARGETS,
    copy_probe,
    load_scored_model,
    message_copy_probe,
    read_answered_rows,
)
from engine.registry import UnknownModel
from engine.sft_data import DatasetError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default-ft", help="registry name or model / adapter dir")
    p.add_argument("--dataset", type=existing_file, default="data/generated/validation_independent.jsonl")
    p.add_argument("--max-examples", type=bounded_int(1, MAX_ROWS), default=150)
    p.add_argument("--messages", action="store_true", help="a base LM: the item in prompt + message")
    p.add_argument("--target", choices=COPY_TARGETS, default="item",
                   help="answers: the item in the customer response, the day count or the region in the "
                        "reasoning")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    try:
        rows = read_answered_rows(args.dataset, args.max_examples)
        model, tokenizer, fmt = load_scored_model(args.model)
    except (DatasetError, UnknownModel, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with tqdm(total=len(rows), desc="copy probe", unit="row") as bar:
        step = lambda done, total: bar.update(1)  # noqa: E731
        if args.messages:
            probe = message_copy_probe(model, tokenizer, fmt, [case for case, _ in rows], progress=step)
        else:
            probe = copy_probe(model, tokenizer, fmt, rows, progress=step, target=args.target)
    kind = "messages" if args.messages else "answers"
    result = {"model": args.model, "dataset": args.dataset, "probe": kind,
              "target": "item" if args.messages else args.target, **probe.to_dict()}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
