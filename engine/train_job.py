"""One retraining job, run as a subprocess by db.jobs.Runner: train, then evaluate against the champion.

uv run python -m engine.train_job --run-dir runs/ft-v2 --champion data/models/default-ft \
    --eval data/generated/eval.jsonl --holdout runs/ft-v2/holdout.jsonl \
    -- --config data/models/default-ft.yaml \
       --dataset data/generated/train.jsonl runs/ft-v2/corrections.jsonl --mix_weights 1 3 \
       --output_dir runs/ft-v2

Everything after ``--`` is train_qlora_sft's flags (engine.training.parse_run_config), unchanged; the
training is engine.training.train with a progress callback. While it runs, RUN_DIR/progress.json
says the stage (training / evaluating / done), the step, the total steps and the loss history,
so the console can draw it without parsing logs; the comparison lands in RUN_DIR/comparison.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

PROGRESS_FILE = "progress.json"
COMPARISON_FILE = "comparison.json"


class ProgressFile:
    """progress.json, rewritten atomically (temp file + rename) so a reader never sees half of it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / PROGRESS_FILE
        self.state: dict[str, Any] = {"stage": "starting", "step": 0, "max_steps": 0, "loss": [],
                                      "pid": os.getpid()}

    def update(self, **fields: Any) -> None:
        self.state.update(fields, updated_at=time.time())
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state), encoding="utf-8")
        os.replace(tmp, self.path)


class ProgressCallback(TrainerCallback):
    """Writes step, total steps and every logged loss to progress.json."""

    def __init__(self, progress: ProgressFile):
        self.progress = progress

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.progress.update(stage="training", max_steps=state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        loss = self.progress.state["loss"]
        if "loss" in logs:
            loss.append([state.global_step, float(logs["loss"])])
        extra = {"eval_loss": float(logs["eval_loss"])} if "eval_loss" in logs else {}
        self.progress.update(step=state.global_step, max_steps=state.max_steps, loss=loss,
                             epoch=state.epoch, **extra)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % 5 == 0 or state.global_step == state.max_steps:
            self.progress.update(step=state.global_step, max_steps=state.max_steps)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(prog="python -m engine.train_job", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, required=True, help="the adapter's output dir (= --output_dir)")
    p.add_argument("--champion", default=None, help="adapter dir of the champion (none: vs base)")
    p.add_argument("--champion-version", default=None, help="its name, e.g. ft-v1 (recorded)")
    p.add_argument("--eval", dest="eval_set", default="data/generated/eval.jsonl", help="frozen eval set")
    p.add_argument("--holdout", default=None, help="held-out reviewed corrections (generator rows)")
    p.add_argument("--stress", default=None,
                   help="the frozen out-of-distribution set (gates like eval; skipped when missing)")
    p.add_argument("--eval-max", type=int, default=None, help="cap on cases per evaluated set")
    p.add_argument("--eval-max-new-tokens", type=int, default=None, help="token cap per answer")
    return p.parse_args(argv[:split]), argv[split + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    args, train_argv = parse_args(sys.argv[1:] if argv is None else argv)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    progress = ProgressFile(args.run_dir)
    progress.update(stage="starting")
    from engine.train_setup import LOG_FORMAT
    from engine.training import parse_run_config, train

    cfg = parse_run_config(train_argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
    trainer = train(cfg, callbacks=[ProgressCallback(progress)])
    # the step training ended at: max_steps, or earlier when the recipe's time budget stopped it
    progress.update(stage="evaluating", step=trainer.state.global_step)
    from engine.champion import evaluate_pair, gate_verdicts, verdict_line

    datasets = {"eval": args.eval_set,
                **({"stress": args.stress} if args.stress and Path(args.stress).is_file() else {}),
                **({"holdout": args.holdout} if args.holdout else {})}
    comparison = evaluate_pair(
        args.run_dir, args.champion, datasets, champion_version=args.champion_version,
        max_examples=args.eval_max, max_new_tokens=args.eval_max_new_tokens,
        progress=lambda name, done, total: progress.update(eval_stage=name, eval_done=done, eval_total=total),
    )
    (args.run_dir / COMPARISON_FILE).write_text(json.dumps(comparison, indent=2), encoding="utf-8")
    progress.update(stage="done")
    print(f"comparison written to {args.run_dir / COMPARISON_FILE}; the promotion gate, per dataset:",
          *(f"  {verdict_line(v)}" for v in gate_verdicts(comparison)), sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
