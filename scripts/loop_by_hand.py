"""The close-the-loop run at a larger scale than CI (dev tool, minutes on CPU; run it nice'd):

uv run python scripts/loop_by_hand.py --out runs/loop-demo --rule CAN-2 \
    --train-data runs/data/generated-12k/train.jsonl --steps 360 --retrain-steps -1

# SFT and DPO on the same corrections of the bundled champion (docs/loop.md):
uv run python scripts/loop_by_hand.py --out runs/loop-ret4-sft --rule RET-4 \
    --champion data/models/default-ft --train-data runs/data/generated-s3-12k/train.jsonl --method sft
uv run python scripts/loop_by_hand.py --out runs/loop-ret4-dpo --rule RET-4 \
    --champion data/models/default-ft --train-data runs/data/generated-s3-12k/train.jsonl --method dpo

1. champion ft-v1: default-base + LoRA (stage 1 of the default-ft recipe, --champion-config) on
   --train-data WITHOUT the rule's rows, or --champion; 2. the champion answers those rows' cases and
   a reviewer corrects each answer (the correction replaces the fine-tuned answer, as in the console),
   then they are exported; 3. the Runner retrains with the console's recipe (--method sft:
   --retrain-config, continue the champion on train + corrections, weights 1:3; --method dpo:
   --retrain-dpo-config, continue it on the (correction, replaced answer) pairs), evaluates against
   ft-v1 on the eval set and the held-out corrections; 4. the per-dataset gate. Prints and writes
   OUT/figures.json (accuracy on the rule before/after, headline figures, gate verdicts, audit).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from app.services.exports import export_reviews
from app.services.jobs import RetrainRequest, Runner, RunnerConfig
from app.services.reviews import submit_review
from app.services.versions import PromotionRefused, promote
from db.audit import audit_entries
from db.cases import add_case, runs_for_case, save_run
from db.models import Export
from db.store import open_store
from db.users import create_user
from db.versions import ensure_bundled_version, get_version
from engine.champion import accuracy_on_rule, gate_verdicts
from engine.cli import MAX_NEW_TOKENS, MAX_ROWS, bounded_float, bounded_int
from engine.registry import resolve_model
from policies import expected_decision, parse_case

REPO = Path(__file__).resolve().parents[1]
HEADLINE_KEYS = ("decision_accuracy", "violation_rate", "json_validity", "latency_p50_s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("runs/loop-demo"))
    p.add_argument("--rule", default="FRD-1")
    p.add_argument("--train-data", default="data/generated/train.jsonl")
    p.add_argument("--champion-config", default="data/models/default-ft.yaml")
    p.add_argument("--retrain-config", default="data/models/default-ft-retrain.yaml")
    p.add_argument("--retrain-dpo-config", default="data/models/default-ft-retrain-dpo.yaml")
    p.add_argument("--method", choices=("sft", "dpo"), default="sft")
    p.add_argument("--champion", default=None,
                   help="an adapter dir to start from as ft-v1 (e.g. data/models/default-ft, for a rule it "
                        "gets wrong) instead of training a champion without the rule")
    p.add_argument("--steps", type=bounded_int(1, 1_000_000), default=150, help="champion steps")
    p.add_argument("--retrain-steps", type=bounded_int(-1, 1_000_000), default=-1,
                   help="-1: the retrain recipe's own length")
    p.add_argument("--corrections-weight", type=bounded_float(0, 1000), default=3.0)
    p.add_argument("--eval-max", type=bounded_int(1, MAX_ROWS), default=None)
    p.add_argument("--eval-max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=None)
    a = p.parse_args(argv)
    if a.retrain_steps == 0:
        p.error("--retrain-steps: 0; must be -1 (the recipe's own length) or 1 or more")
    for option in ("train_data", "champion_config", "retrain_config", "retrain_dpo_config"):
        if not (REPO / getattr(a, option)).is_file():
            p.error(f"--{option.replace('_', '-')}: no such file: {getattr(a, option)}")
    if a.champion and not (REPO / a.champion / "adapter_config.json").is_file():
        p.error(f"--champion: not an adapter dir (no adapter_config.json): {a.champion}")
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (REPO / a.train_data).open()]
    keep = [r for r in rows if expected_decision(parse_case(r["input"])).rule != a.rule]
    target = [r for r in rows if expected_decision(parse_case(r["input"])).rule == a.rule]
    train = out / "train-without-rule.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in keep))
    common = ["--eval_dataset", "data/generated/validation.jsonl", "--max_eval_examples", "64",
              "--eval_each_epoch", "false", "--select_best_by_val_loss", "false", "--logging_steps", "10"]
    if a.champion and not (out / "ft-v1" / "adapter_config.json").is_file():
        import shutil

        shutil.copytree(REPO / a.champion, out / "ft-v1")
    if not (out / "ft-v1" / "adapter_config.json").is_file():
        from engine.training import parse_run_config, train

        train(parse_run_config(["--config", a.champion_config, *common, "--max_train_examples", "1000000",
                               "--model", "default-base", "--dataset", str(train),
                               "--output_dir", str(out / "ft-v1"), "--max_steps", str(a.steps)]))
    store = open_store(out / "loop.db")
    with store.session() as s:
        create_user(s, "ops", "ops", "ops-password-1")
        create_user(s, "rev", "reviewer", "reviewer-password-1")
        ensure_bundled_version(s, out / "ft-v1", "default-base")
    # The champion answers the rule's cases (fine-tuned only: the answer a reviewer corrects); each
    # correction replaces it (chosen = the generator's answer, rejected = the champion's: DPO's pair).
    from engine import Engine

    cases = [parse_case(r["input"]) for r in target]
    answers = Engine.load(str(out / "ft-v1")).decide_many(cases, "finetuned", batch_size=32)
    for case, answer, r in zip(cases, answers, target, strict=True):
        with store.session() as s:
            pk = add_case(s, case, "try", "rev").id or 0
            save_run(s, pk, answer, "rev")
            submit_review(s, pk, "correct", "rev", runs=runs_for_case(s, pk), answer=r["output"])
    with store.session() as s:
        # in the champion's prompt format, as the console exports (the Runner trains each correction
        # as case + answer rendered in the model's own format either way)
        export_reviews(s, "ops", out / "exports", resolve_model(out / "ft-v1").prompt_format)
    with store.session() as s:
        export_id = s.exec(__import__("sqlmodel").select(Export.id)).one()
    extra = [*common, "--max_steps", str(a.retrain_steps)] if a.method == "sft" else \
        (["--max_steps", str(a.retrain_steps)] if a.retrain_steps > 0 else [])  # DPO: no SFT-row eval set
    runner = Runner(store, RunnerConfig(repo_root=REPO, runs_dir=out / "runs", base_dataset=str(train),
                                        train_config=a.retrain_config, dpo_train_config=a.retrain_dpo_config,
                                        eval_max=a.eval_max, eval_max_new_tokens=a.eval_max_new_tokens,
                                        extra_args=extra))
    job = runner.start("ops", RetrainRequest([export_id], 1.0, a.corrections_weight, 0.25, init="champion",
                                             method=a.method))
    job = runner.wait(job.id or 0, timeout_s=4 * 3600, poll_s=10)
    print(job.status, job.error or "")
    with store.session() as s:
        ev = get_version(s, job.version_name).evaluation() or {}
    figures = {"rule": a.rule, "method": a.method, "job": job.status,
               "gate": [asdict(v) for v in gate_verdicts(ev)] if ev else None}
    for ds in ("eval", "holdout"):
        d = ev.get("datasets", {}).get(ds)
        if d:
            figures[ds] = {"n": d["summary"]["champion"]["n"],
                           "rule_accuracy": {side: accuracy_on_rule(ev, ds, a.rule, side)
                                             for side in ("champion", "challenger")},
                           **{side: {k: d["summary"][side][k] for k in HEADLINE_KEYS}
                              for side in ("champion", "challenger")},
                           "worse": len(d["worse"]), "better": len(d["better"])}
    try:
        with store.session() as s:
            promote(s, "ops", job.version_name)
        figures["promoted"] = True
    except PromotionRefused as exc:
        figures["promoted"] = str(exc)
    with store.session() as s:
        figures["audit"] = dict(Counter(e.action for e in audit_entries(s)))
    (out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
