"""Champion vs challenger: both adapters answer the same cases on one base; what changed, rule by rule.

:func:`evaluate_pair` loads the base once with the challenger as ``finetuned`` and the champion as
``champion``, answers each dataset (the frozen eval set, a held-out slice of reviewed corrections,
an out-of-distribution stress set) with both, and returns a JSON-safe comparison per dataset: the
engine.metrics summary per side, accuracy per deciding rule with its change, the cases that got
worse, and the hard-violation counts. The figures are engine.metrics', so they match
scripts/evaluate.py.

:func:`gate_verdicts` reads a comparison dataset by dataset, as the promotion gate
(app.services.versions.promote) and the Models tab do: on each GATING dataset (``eval``; ``stress``
when evaluated) the challenger may have no more hard-violation cases than the champion and may lose
at most :data:`ACCURACY_MARGIN` of decision accuracy. Other datasets (``holdout``: corrections from
the distribution the challenger was trained on) are reported beside, never added in, never gating.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
    Out: ``{"champion_version", "datasets": {name: comparison}, "wall_s"}``; each comparison is
    :func:`compare_records`' plus ``dataset`` and ``dataset_sha256``. There is deliberately no total
    over datasets: the gate reads each dataset on its own (:func:`gate_verdicts`). Without a
    champion the challenger is compared with the base model. Errors: engine.registry / PEFT load
    errors, engine.metrics.DatasetError.
    """
    from engine.backends.base import GenerationSettings
    from engine.core import Engine

    t0 = time.perf_counter()
    extra = {"champion": str(champion_dir)} if champion_dir else None
    settings = GenerationSettings(max_new_tokens=max_new_tokens) if max_new_tokens else None
    engine = Engine.load(str(challenger_dir), adapters=extra, settings=settings)
    variants = {"champion": "champion" if champion_dir else "base", "challenger": "finetuned"}
    out: dict[str, Any] = {"champion_version": champion_version, "datasets": {}}
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
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def accuracy_on_rule(evaluation: Mapping[str, Any], dataset: str, rule: str, side: str) -> float | None:
    """The accuracy of ``side`` on cases decided by ``rule`` in ``dataset`` of an evaluation, or None."""
    for row in evaluation.get("datasets", {}).get(dataset, {}).get("per_rule", []):
        if row["rule"] == rule:
            return row[side]
    return None


# --- the promotion gate, per dataset -------------------------------------------------------------
GATING_DATASETS = ("eval", "stress")  # eval: the frozen eval set; stress: out of distribution, when evaluated
REQUIRED_DATASETS = ("eval",)  # a comparison without eval figures cannot be promoted
# The most decision accuracy (absolute: 0.01 = one percentage point) a challenger may lose against
# the champion on a gating dataset; hard-violation cases may not rise at all.
ACCURACY_MARGIN = 0.01
_EPS = 1e-9  # float noise: a loss of exactly the margin passes


@dataclass(frozen=True)
class DatasetVerdict:
    """What the gate says about one dataset of a comparison.

    ``gating``: whether the dataset can refuse a promotion (eval, stress); ``passed``: the
    challenger is within the rules on it (for a non-gating dataset: informative only);
    ``blocks``: gating and not passed. The figures are None when the comparison has none for the
    dataset (an evaluation stored before the per-dataset gate). ``reason`` names the dataset and the
    figures, e.g. "on eval, 4 cases with hard violations against the champion's 2".
    """

    dataset: str
    gating: bool
    champion_violations: int | None
    challenger_violations: int | None
    champion_accuracy: float | None
    challenger_accuracy: float | None
    passed: bool
    reason: str

    @property
    def blocks(self) -> bool:
        return self.gating and not self.passed

    @property
    def has_figures(self) -> bool:
        return self.champion_violations is not None


def _figures(d: Any) -> tuple[int, int, float, float] | None:
    """(champion, challenger hard-violation cases, champion, challenger accuracy), or None."""
    try:
        hv, summary = d["hard_violations"], d["summary"]
        figures = (int(hv["champion"]), int(hv["challenger"]),
                   float(summary["champion"]["decision_accuracy"]),
                   float(summary["challenger"]["decision_accuracy"]))
    except (KeyError, TypeError, ValueError):
        return None
    return figures


def _points(margin: float) -> str:
    points = margin * 100
    return f"{points:.1f} point{'' if abs(points - 1) < _EPS else 's'}"


def _cases(n: int) -> str:
    return f"{n} case{'' if n == 1 else 's'}"


def dataset_verdict(name: str, d: Any, margin: float = ACCURACY_MARGIN) -> DatasetVerdict:
    """The gate's verdict on one dataset's comparison (see :func:`gate_verdicts`)."""
    gating = name in GATING_DATASETS
    figures = _figures(d)
    if figures is None:
        return DatasetVerdict(name, gating, None, None, None, None, False,
                              f"not evaluated per dataset (no figures for {name}); "
                              "re-evaluate it against the champion")
    old_hv, new_hv, old_acc, new_acc = figures
    problems = []
    if new_hv > old_hv:
        problems.append(f"{_cases(new_hv)} with hard violations against the champion's {old_hv}")
    if old_acc - new_acc > margin + _EPS:
        problems.append(f"decision accuracy {new_acc:.1%} vs the champion's {old_acc:.1%} "
                        f"(more than {_points(margin)} lower)")
    if problems:
        reason = f"on {name}, " + " and ".join(problems)
    else:
        reason = (f"on {name}, {_cases(new_hv)} with hard violations against the champion's {old_hv}, "
                  f"decision accuracy {new_acc:.1%} vs the champion's {old_acc:.1%}")
    return DatasetVerdict(name, gating, old_hv, new_hv, old_acc, new_acc, not problems, reason)


def gate_verdicts(
    comparison: Mapping[str, Any] | None, margin: float = ACCURACY_MARGIN
) -> list[DatasetVerdict]:
    """The promotion gate's verdict per dataset of a comparison (:func:`evaluate_pair`'s output).

    Rules, each dataset on its own (figures are never added over datasets): on a gating dataset
    (``eval``, and ``stress`` when the comparison has it) the challenger passes when it has no more
    cases with a hard violation than the champion AND its decision accuracy is at most ``margin``
    (absolute, default :data:`ACCURACY_MARGIN`) below the champion's. Any other dataset (``holdout``)
    is judged the same way but only reported: it never refuses and never offsets a gating failure.
    A required dataset (``eval``) that is missing, or a gating one without per-dataset figures (an
    evaluation stored before this gate, with only a total), yields a blocking "re-evaluate" verdict.
    Out: gating datasets first (eval, stress), then the others in the comparison's order. Pure.
    Raises ValueError for a negative margin.
    """
    if margin < 0:
        raise ValueError(f"margin: {margin} is negative")
    datasets = dict((comparison or {}).get("datasets") or {})
    names = [n for n in GATING_DATASETS if n in datasets or n in REQUIRED_DATASETS]
    names += [n for n in datasets if n not in names]
    return [dataset_verdict(n, datasets.get(n), margin) for n in names]


def gate_refusal(verdicts: list[DatasetVerdict]) -> str | None:
    """Why the gate refuses (the blocking verdicts' reasons, joined), or None when it passes."""
    blocking = [v.reason for v in verdicts if v.blocks]
    return "; ".join(blocking) if blocking else None


def verdict_line(v: DatasetVerdict) -> str:
    """One line per dataset for people: the dataset, its role, the outcome and the figures."""
    role = "gating" if v.gating else "reported, not gating"
    if v.gating:
        outcome = "passes" if v.passed else "REFUSES"
    elif not v.has_figures:
        outcome = "no figures"
    else:
        outcome = "within the rules" if v.passed else "outside the rules"
    return f"{v.dataset} ({role}): {outcome}: {v.reason}"


_HEADLINES = (("decision_accuracy", "decision accuracy", "{:.1%}"),
              ("violation_rate", "violation rate", "{:.1%}"), ("json_validity", "JSON validity", "{:.1%}"),
              ("latency_p50_s", "latency p50 (s)", "{:.3f}"))


def comparison_markdown(evaluation: Mapping[str, Any], challenger: str = "challenger",
                        max_worse: int = 15, margin: float = ACCURACY_MARGIN) -> str:
    """The evaluation as Markdown: the gate's verdict per dataset (:func:`gate_verdicts`, the very
    verdicts promotion uses), headline figures side by side, per-rule changes, worse cases.

    Whether the comparison is against today's champion is the gate's other check (promote); the
    header names the champion it was compared with.
    """
    champ = evaluation.get("champion_version") or "base"
    verdicts = gate_verdicts(evaluation, margin)
    refusal = gate_refusal(verdicts)
    outcome = f"the gate refuses ({refusal})" if refusal else "the gate passes"
    parts = [f"**{challenger}** vs champion **{champ}**: {outcome}.\n"]
    parts += [f"- {verdict_line(v)}" for v in verdicts]
    for name, d in evaluation.get("datasets", {}).items():
        if not isinstance(d, Mapping) or "summary" not in d:
            continue
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
