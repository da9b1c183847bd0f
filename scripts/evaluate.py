"""Evaluate base and/or fine-tuned answers on a generator JSONL set.

# Choosing (a recipe, a learning rate, a checkpoint): the validation split, and only it.
uv run python scripts/evaluate.py --dataset data/generated/validation.jsonl --variant both --out runs/val

# Reporting, once a choice is made: both variants of the default model on the frozen eval split.
uv run python scripts/evaluate.py --dataset data/generated/eval.jsonl --variant both --out runs/eval-default

# A quick look: 50 cases, fine-tuned only, free-running decoding (JSON validity then measured):
uv run python scripts/evaluate.py --dataset data/generated/validation.jsonl --variant finetuned \
    --max-examples 50 --unconstrained

# The same on a served model (backend "openai" in data/models.toml; start the server first:
# uv run python -m engine.serve --model default-ft --port 8011); the figures match the local engine's:
uv run python scripts/evaluate.py --model served-ft --dataset data/generated/eval.jsonl --variant both

# A quick probe: constrained decoding with a small budget. The grammar starts closing the answer 96
# tokens before --max-new-tokens (engine.constrained.CLOSING_RESERVE_TOKENS), so 192 leaves the
# decision, policy_refs and next_action (the answer's first ~80 tokens) free, cuts the prose short and
# still ends in a valid answer (how stages 8-10 of default-ft were chosen). 128 leaves only the
# decision free (the probe of stages 1-7: on 60 eval cases the same accuracy as 512, 3.3x the
# throughput). Much below that, answers end truncated, i.e. invalid.
uv run python scripts/evaluate.py --dataset data/generated/validation.jsonl --variant finetuned \
    --max-new-tokens 192

Writes OUT/summary.json (``variants``: per variant, n, decision_accuracy, violation_rate, violations per
code, json_validity, the whole-answer figures policy_refs_exact, next_action_match, text_check (with
text_problems) and facts_check (with facts_misstated), latency_p50_s, latency_p95_s, mean_output_tokens,
throughput_cases_per_s, and the slices, among them ``by_chain``: n, accuracy and violating cases per
deciding rule chain such as ``NRC-3+LIM-1``, what scripts/rebalance_dataset.py --weak takes; plus
dataset_sha256, model and adapter versions, the config, and on eval.jsonl / stress.jsonl ``targets``: issue
15's targets per fine-tuned variant, met or not, which it also prints), OUT/predictions.jsonl (one row per
case and variant, with its ``chain``), OUT/report.md (side-by-side tables, violations per rule chain,
confusion matrices) and OUT/accuracy_per_rule.png. The figures come from engine.metrics, shared with the
console. An answer that does not parse as a schema-valid answer is invalid: wrong, not JSON-valid, never a
violation. """

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from engine import Engine, GenerationSettings, UnknownVariant
from engine.cli import (
    MAX_BATCH,
    MAX_NEW_TOKENS,
    MAX_ROWS,
    bounded_int,
    existing_file,
    refusals,
    writable_dir,
)
from engine.guard import guard
from engine.metrics import (
    DatasetError,
    check_targets,
    load_rows,
    make_record,
    plot_accuracy_per_rule,
    render_report,
    sha256_of,
    summarize,
    targets_for,
)
from engine.registry import RegistryError, UnknownModel, resolve_model


@dataclass(frozen=True)
class EvalConfig:
    """Every knob of an evaluation run; saved into summary.json."""

    dataset: str
    out: str = "runs/eval"
    model: str = "default-ft"  # registry name, model dir or adapter dir
    variant: str = "both"  # base | finetuned | both | any adapter name
    max_examples: int | None = None
    batch_size: int = 8
    unconstrained: bool = False
    max_new_tokens: int = 512
    quantize: str = "none"
    dtype: str = "auto"  # auto: bf16 on a GPU that has it, else fp32; fp32 on a GPU answers as the CPU does
    registry: str | None = None  # a models.toml other than data/models.toml (e.g. a served entry)


def run(config: EvalConfig) -> dict[str, Any]:
    """Evaluate per ``config``; writes the four outputs and returns the summary dict."""
    rows = load_rows(config.dataset, config.max_examples)
    cases = [case for case, _ in rows]
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens)
    model = resolve_model(config.model, config.registry) if config.registry else config.model
    engine = Engine.load(model, quantize=config.quantize, settings=settings, dtype=config.dtype)
    variants = ["base", engine.default_variant] if config.variant == "both" else [config.variant]
    if config.variant == "finetuned":
        variants = [engine.default_variant]
    answers: dict[str, list] = {}
    wall: dict[str, float] = {}
    for variant in variants:
        with tqdm(total=len(cases), desc=f"evaluate {variant}", unit="case") as bar:
            t0 = time.perf_counter()
            answers[variant] = engine.decide_many(
                cases, variant=variant, batch_size=config.batch_size, constrained=not config.unconstrained,
                progress=lambda done, _total: bar.update(done - bar.n))
            wall[variant] = time.perf_counter() - t0
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for i, (case, label) in enumerate(rows):
            decisions = {v: answers[v][i].decision for v in variants}
            for v in variants:
                a = answers[v][i]
                record = make_record(case, label, a)
                records.append(record)
                verdict = guard(case, a, decisions if len(variants) > 1 else None)
                row = {**record.to_dict(), "model_version": a.model_version, "raw_text": a.raw_text,
                       "error": a.error, "truncated": a.truncated, "flags": list(verdict.flags),
                       "auto_send": verdict.auto_send}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    per_variant = summarize(records, wall)
    meta = {"dataset": config.dataset, "dataset_sha256": sha256_of(config.dataset),
            "model": config.model, "model_versions": {v: engine.model_version(v) for v in variants},
            "adapters": dict(getattr(engine.spec, "adapters", {}) or {}),
            "backend": engine.figures()["backend"],
            "decoding": "unconstrained" if config.unconstrained else "constrained (llguidance)"}
    summary = {"variants": per_variant, **meta, "config": asdict(config)}
    if which := targets_for(config.dataset):  # issue 15's targets hold the fine-tuned side, not the base
        summary["targets"] = {"set": which, **{v: check_targets(f, which) for v, f in per_variant.items()
                                               if v != "base"}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "report.md").write_text(render_report(per_variant, meta), encoding="utf-8")
    plot_accuracy_per_rule(per_variant, out / "accuracy_per_rule.png")
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, type=existing_file,
                   help="generator JSONL: {id, instruction, input, output}")
    p.add_argument("--out", default=EvalConfig.out, help="output directory")
    p.add_argument("--model", default=EvalConfig.model, help="registry name, model dir or adapter dir")
    p.add_argument("--variant", default=EvalConfig.variant, help="base | finetuned | both | an adapter name")
    p.add_argument("--max-examples", type=bounded_int(1, MAX_ROWS), default=None)
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=EvalConfig.batch_size)
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=EvalConfig.max_new_tokens)
    p.add_argument("--quantize", choices=("none", "nf4", "auto"), default=EvalConfig.quantize)
    p.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default=EvalConfig.dtype,
                   help="weights' dtype (auto: bf16 on a GPU that has it, else fp32)")
    p.add_argument("--unconstrained", action="store_true", help="free decoding + extraction (no grammar)")
    p.add_argument("--registry", default=None, type=existing_file,
                   help="models.toml for --model (default: data/models.toml)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    a = parser().parse_args(argv)
    return EvalConfig(dataset=a.dataset, out=a.out, model=a.model, variant=a.variant,
                      max_examples=a.max_examples, batch_size=a.batch_size, unconstrained=a.unconstrained,
                      max_new_tokens=a.max_new_tokens, quantize=a.quantize, dtype=a.dtype,
                      registry=a.registry)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate; a mistake in the options or the dataset exits with status 2 and one line naming it."""
    p = parser()
    config = parse_args(argv)
    writable_dir(p, "--out", config.out)  # before the model loads and the cases are answered
    with refusals(p, {DatasetError: "--dataset", UnknownModel: "--model", RegistryError: "--registry",
                      UnknownVariant: "--variant"}):
        summary = run(config)
    for v, s in summary["variants"].items():
        print(f"{v}: accuracy {s['decision_accuracy']:.1%}, violations {s['violation_rate']:.1%}, "
              f"JSON valid {s['json_validity']:.1%}, p50 {s['latency_p50_s']:.3f}s, "
              f"{s['throughput_cases_per_s']:.2f} cases/s")
        chains = sorted(s["by_chain"].items(), key=lambda item: (-item[1]["violating"], item[0]))
        if any(f["violating"] for _, f in chains):
            print("  violating cases per rule chain: "
                  + ", ".join(f"{c} {f['violating']}" for c, f in chains if f["violating"]))
        if "policy_refs_exact" in s:
            print(f"  whole answer: policy_refs exact {s['policy_refs_exact']:.1%}, next_action match "
                  f"{s['next_action_match']:.1%}, text check {s['text_check']:.1%} {s['text_problems']}, "
                  f"facts check {s['facts_check']:.1%} {s['facts_misstated']}")
        for t in summary.get("targets", {}).get(v, []):
            print(f"  target ({summary['targets']['set']}) {t['figure']} {t['target']}: {t['value']:.1%} "
                  f"{'met' if t['met'] else 'NOT met'}")
    print(f"wrote {config.out}/summary.json, predictions.jsonl, report.md, accuracy_per_rule.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
