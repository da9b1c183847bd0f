"""Champion vs challenger: both adapters answer the same cases on one base; what changed, rule by rule.

:func:`evaluate_pair` loads the base once with the challenger as ``finetuned`` and the champion as
``champion``, answers each dataset (the frozen eval set, a held-out slice of reviewed corrections)
with both, and returns a JSON-safe comparison: the engine.metrics summary per side, accuracy per
deciding rule with its change, the cases that got worse, and the hard-violation counts that
gate promotion (db.versions.promote). The figures are engine.metrics', so they match
scripts/evaluate.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.metrics import EvalRecord, load_rows, make_record, sha256_of, summarize_variant

SIDES = ("champion", "challenger")
# kept small: the console shows headlines + rules
_DROP = ("confusion", "by_request_type", "by_region", "by_chain")


def compare_records(champion: list[EvalRecord], challenger: list[EvalRecord]) -> dict[str, Any]:
    """Side-by-side figures of two runs over the same cases (in the same order).

    Out: ``summary`` per side, ``per_rule`` rows (rule, n, champion, challenger, delta),
    ``worse``/``better`` case lists, ``hard_violations`` per side. Raises ValueError for runs
    over different cases.
    """
    if [r.case_id for r in champion] != [r.case_id for r in challenger]:
        raise ValueError("champion and challenger answered different cases")
    runs = (champion, challenger)
    summary = {side: summarize_variant(recs) for side, recs in zip(SIDES, runs, strict=True)}
    rules = sorted(set(summary["champion"]["by_rule"]) | set(summary["challenger"]["by_rule"]))
    per_rule = []
    for rule in rules:
        old, new = (summary[s]["by_rule"].get(rule, {}) for s in SIDES)
        per_rule.append({"rule": rule, "n": old.get("n", new.get("n", 0)),
                         "champion": old.get("accuracy"), "challenger": new.get("accuracy"),
                         "delta": (new.get("accuracy") or 0.0) - (old.get("accuracy") or 0.0)})
    worse, better = [], []
    for old, new in zip(champion, challenger, strict=True):
        row = {"case_id": old.case_id, "rule": old.rule, "label": old.label,
               "champion": old.predicted, "challenger": new.predicted,
               "challenger_violations": list(new.violations)}
        if old.correct and not new.correct:
            worse.append(row)
        elif new.correct and not old.correct:
            better.append(row)
    return {
        "summary": {s: {k: v for k, v in summary[s].items() if k not in _DROP} for s in SIDES},
        "per_rule": per_rule,
        "worse": worse,
        "better": better,
        "hard_violations": {s: sum(bool(r.violations) for r in recs)
                            for s, recs in zip(SIDES, (champion, challenger), strict=True)},
    }


def evaluate_pair(
    challenger_dir: str | Path,
    champion_dir: str | Path | None,
    datasets: Mapping[str, str | Path],
    champion_version: str | None = None,
    max_examples: int | None = None,
    batch_size: int = 16,
    progress: Callable[[str, int, int], None] | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate the challenger adapter against the champion on each generator-format dataset.

    In: adapter dirs (same base); ``datasets`` name -> JSONL (empty or missing files are skipped);
    ``progress(dataset, done, total)``; ``max_new_tokens`` caps each answer (default: the engine's).
    Out: ``{"champion_version", "datasets": {name: comparison},
    "hard_violations": {side: total}, "wall_s"}``. Without a champion the challenger is compared
    with the base model. Errors: engine.registry / PEFT load errors, engine.metrics.DatasetError.
    """
    from engine.backends import GenerationSettings
    from engine.core import Engine

    t0 = time.perf_counter()
    extra = {"champion": str(champion_dir)} if champion_dir else None
    settings = GenerationSettings(max_new_tokens=max_new_tokens) if max_new_tokens else None
    engine = Engine.load(str(challenger_dir), adapters=extra, settings=settings)
    variants = {"champion": "champion" if champion_dir else "base", "challenger": "finetuned"}
    out: dict[str, Any] = {"champion_version": champion_version, "datasets": {}}
    totals = dict.fromkeys(SIDES, 0)
    for name, path in datasets.items():
        if not Path(path).is_file() or Path(path).stat().st_size == 0:
            continue
        rows = load_rows(path, max_examples)
        cases = [case for case, _ in rows]
        records: dict[str, list[EvalRecord]] = {}
        for side, variant in variants.items():
            step = None if progress is None else (lambda d, t, n=f"{name}/{side}": progress(n, d, t))
            answers = engine.decide_many(cases, variant=variant, batch_size=batch_size, progress=step)
            records[side] = [make_record(c, label, a) for (c, label), a in zip(rows, answers, strict=True)]
        comparison = compare_records(records["champion"], records["challenger"])
        comparison["dataset"] = str(path)
        comparison["dataset_sha256"] = sha256_of(path)
        out["datasets"][name] = comparison
        for side in SIDES:
            totals[side] += comparison["hard_violations"][side]
    out["hard_violations"] = totals
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def accuracy_on_rule(evaluation: Mapping[str, Any], dataset: str, rule: str, side: str) -> float | None:
    """The accuracy of ``side`` on cases decided by ``rule`` in ``dataset`` of an evaluation, or None."""
    for row in evaluation.get("datasets", {}).get(dataset, {}).get("per_rule", []):
        if row["rule"] == rule:
            return row[side]
    return None


_HEADLINES = (("decision_accuracy", "decision accuracy", "{:.1%}"),
              ("violation_rate", "violation rate", "{:.1%}"), ("json_validity", "JSON validity", "{:.1%}"),
              ("latency_p50_s", "latency p50 (s)", "{:.3f}"))


def comparison_markdown(evaluation: Mapping[str, Any], challenger: str = "challenger",
                        max_worse: int = 15) -> str:
    """The evaluation as Markdown: headline figures side by side, per-rule changes, worse cases."""
    champ = evaluation.get("champion_version") or "base"
    hv = evaluation.get("hard_violations", {})
    parts = [f"**{challenger}** vs champion **{champ}**: cases with hard violations "
             f"{hv.get('challenger', '?')} vs {hv.get('champion', '?')}"]
    for name, d in evaluation.get("datasets", {}).items():
        s = d["summary"]
        parts += [f"\n#### {name} ({s['champion']['n']} cases)\n", f"| metric | {champ} | {challenger} |",
                  "|---|---|---|"]
        parts += [f"| {label} | {fmt.format(s['champion'][k])} | {fmt.format(s['challenger'][k])} |"
                  for k, label, fmt in _HEADLINES]
        changed = [r for r in d["per_rule"] if abs(r["delta"]) > 1e-9]
        if changed:
            parts += ["\n| rule | n | " + champ + " | " + challenger + " | change |", "|---|---|---|---|---|"]
            parts += [f"| {r['rule']} | {r['n']} | {(r['champion'] or 0):.0%} | {(r['challenger'] or 0):.0%} "
                      f"| {r['delta']:+.0%} |" for r in changed]
        worse = d.get("worse", [])
        parts.append(f"\n{len(worse)} cases got worse, {len(d.get('better', []))} got better.")
        if worse:
            parts += [f"\n| case | rule | label | {champ} | {challenger} |", "|---|---|---|---|---|"]
            parts += [f"| {w['case_id']} | {w['rule']} | {w['label']} | {w['champion']} | {w['challenger']} |"
                      for w in worse[:max_worse]]
    return "\n".join(parts)
