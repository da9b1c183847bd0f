"""Figures for the Metrics tab, aggregated from the store as pandas DataFrames (long format, ready to plot).

- :func:`model_metrics`: per model version and variant, decision accuracy, violation rate and JSON
  validity, computed by :mod:`engine.metrics` (the evaluation's one implementation) from records
  built out of the stored runs: the label is the rule engine's expected decision for the stored
  case; a run that is not ``ok`` counts as wrong, not JSON-valid and never as a violation.
- :func:`reviewer_agreement`: share of approved/corrected cases whose final decision equals each model's.
- :func:`corrections_per_rule`: corrected cases by the rule id that decides them.
- :func:`evaluation_reports`: the frozen sets' figures (eval, and the out-of-distribution stress set)
  as ``scripts/evaluate.py`` wrote them (its ``summary.json``), so the tab shows stress beside eval;
  their copies with item names our catalogue does not have ("eval_renamed", "stress_titled") too.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from sqlmodel import Session, col, select

from db.cases import latest_by_variant, run_answer
from db.models import DONE_STATUSES, CaseRecord, ModelRun, Review
from engine.metrics import (
    METRIC_LABELS,
    WHOLE_ANSWER_LABELS,
    EvalRecord,
    make_record,
    reported_set,
    summarize_variant,
)
from engine.types import ModelAnswer
from policies import Case, expected_decision, parse_case

_METRIC_KEYS = ("decision_accuracy", "violation_rate", "json_validity")  # engine.metrics summary keys
# ("decision accuracy", "violation rate", "JSON validity"): the labels engine.metrics' report uses
METRIC_NAMES = tuple(METRIC_LABELS[k] for k in _METRIC_KEYS)
# ("policy_refs exact", "text check", "facts check", "auto-send"): the whole answer, in the frozen-set
# reports only (the store's runs are labelled by the rule engine's decision, not a reference answer);
# None for a report written before a figure existed
WHOLE_ANSWER_NAMES = tuple(WHOLE_ANSWER_LABELS.values())


def run_record(case: Case, run: ModelRun) -> EvalRecord:
    """The :class:`engine.metrics.EvalRecord` of a stored run of ``case`` (label: the expected decision)."""
    answer = ModelAnswer(
        case_id=case.case_id,
        variant=run.variant,
        model_version=run.model_version,
        status=run.status,  # type: ignore[arg-type]  # stored from a ModelAnswer's status
        raw_text=run.raw_text,
        answer=run_answer(run),
        error=run.error,
        latency_s=run.latency_s,
        input_tokens=run.input_tokens,
        output_tokens=run.output_tokens,
        truncated=run.truncated,
    )
    return make_record(case, expected_decision(case).decision, answer)


def model_metrics(session: Session) -> pd.DataFrame:
    """Columns: model_version, variant, metric, value (0..1), n; the values are engine.metrics'."""
    groups: dict[tuple[str, str], list[EvalRecord]] = defaultdict(list)
    cases: dict[int, Case] = {}
    query = select(ModelRun, CaseRecord).join(CaseRecord, col(ModelRun.case_pk) == col(CaseRecord.id))
    for run, record in session.exec(query.order_by(col(ModelRun.id))):
        if run.case_pk not in cases:
            cases[run.case_pk] = parse_case(json.loads(record.case_json))
        groups[(run.model_version, run.variant)].append(run_record(cases[run.case_pk], run))
    rows = []
    for (version, variant), records in sorted(groups.items()):
        summary = summarize_variant(records)
        for metric, key in zip(METRIC_NAMES, _METRIC_KEYS, strict=True):
            rows.append(
                {
                    "model_version": version,
                    "variant": variant,
                    "metric": metric,
                    "value": summary[key],
                    "n": summary["n"],
                }
            )
    return pd.DataFrame(rows, columns=["model_version", "variant", "metric", "value", "n"])


def _final_reviews(session: Session) -> dict[int, Review]:
    latest: dict[int, Review] = {}
    for review in session.exec(select(Review).order_by(col(Review.id))):
        latest[review.case_pk] = review
    return {pk: r for pk, r in latest.items() if r.status in DONE_STATUSES and r.answer_json}


def reviewer_agreement(session: Session) -> pd.DataFrame:
    """Columns: variant, agreement (0..1), n (reviewed cases that variant answered)."""
    finals = _final_reviews(session)
    agree: Counter[str] = Counter()
    total: Counter[str] = Counter()
    runs_by_case: dict[int, list[ModelRun]] = defaultdict(list)
    for run in session.exec(
        select(ModelRun).where(col(ModelRun.case_pk).in_(list(finals))).order_by(col(ModelRun.id))
    ):
        runs_by_case[run.case_pk].append(run)
    for pk, review in finals.items():
        final_decision = json.loads(review.answer_json or "{}").get("decision")
        for variant, run in latest_by_variant(runs_by_case[pk]).items():
            total[variant] += 1
            agree[variant] += run.decision == final_decision
    rows = [{"variant": v, "agreement": agree[v] / total[v], "n": total[v]} for v in sorted(total)]
    return pd.DataFrame(rows, columns=["variant", "agreement", "n"])


def corrections_per_rule(session: Session) -> pd.DataFrame:
    """Columns: rule, corrections: corrected cases counted by their deciding rule id."""
    counts: Counter[str] = Counter()
    for pk, review in _final_reviews(session).items():
        if review.status != "corrected":
            continue
        record = session.get(CaseRecord, pk)
        if record is not None:
            counts[expected_decision(parse_case(json.loads(record.case_json))).rule] += 1
    rows = [{"rule": rule, "corrections": n} for rule, n in sorted(counts.items())]
    return pd.DataFrame(rows, columns=["rule", "corrections"])


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters over ``pairs`` of labels: (p_o - p_e) / (1 - p_e).

    p_o is the share of pairs that agree, p_e the agreement expected by chance from each rater's
    label frequencies. None for no pairs; 1.0 when both raters always give the same single label
    (p_e = 1, where the formula is 0/0).
    """
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    if expected == 1:
        return 1.0
    return (observed - expected) / (1 - expected)


# Where scripts/evaluate.py's summaries are looked for: its --out folders under runs/ and the copies
# kept in benchmarks/ (``eval_summary.json``, ``stress_summary.json``).
REPORT_GLOBS = ("benchmarks/*summary.json", "runs/*/summary.json", "runs/*/*/summary.json")
# The targets met sit beside the headline figures, in view on a laptop; the whole answer's after them.
REPORT_COLUMNS = ["set", "model", "variant", "n", *METRIC_NAMES, "targets met", *WHOLE_ANSWER_NAMES,
                  "facts misstated", "report", "written"]


def misstated_kinds(counts: object) -> str:
    """A summary's ``facts_misstated`` (answers per kind of misstated fact: days, region, ...) as one
    line, most first ("days 128 · region 21 · claims 6"); "" when none was counted or not recorded."""
    if not isinstance(counts, dict):
        return ""
    ranked = sorted(((k, v) for k, v in counts.items() if isinstance(v, int) and v > 0),
                    key=lambda kv: (-kv[1], kv[0]))
    return " · ".join(f"{kind} {n}" for kind, n in ranked)


def _report_rows(path: Path) -> list[dict[str, object]]:
    """One row per variant of the summary at ``path`` when it is an evaluation of a frozen set."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        which = reported_set(summary["dataset"])
        variants = summary["variants"]
    except (OSError, ValueError, KeyError, TypeError):  # not an evaluate.py summary: not a report
        return []
    if which is None or not isinstance(variants, dict):
        return []
    targets = (summary.get("targets") or {}) if isinstance(summary.get("targets"), dict) else {}
    written = pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")
    rows = []
    for variant, figures in variants.items():
        checks = targets.get(variant) or []
        rows.append({
            "set": which,
            "model": str((summary.get("model_versions") or {}).get(variant) or summary.get("model", "")),
            "variant": variant,
            "n": int(figures.get("n", 0)),
            **{name: figures.get(key) for name, key in zip(METRIC_NAMES, _METRIC_KEYS, strict=True)},
            **{name: figures.get(key) for key, name in WHOLE_ANSWER_LABELS.items()},
            "facts misstated": misstated_kinds(figures.get("facts_misstated")),
            "targets met": f"{sum(bool(c.get('met')) for c in checks)} of {len(checks)}" if checks else "",
            "report": str(path),
            "written": written,
            "_mtime": path.stat().st_mtime,
        })
    return rows


def report_figures(reports: pd.DataFrame, model_version: str, dataset: str = "eval") -> dict[str, Any] | None:
    """The newest report's figures (``decision accuracy``, ``violation rate``, ``report``) on
    ``dataset`` for the model version ``model_version``, from :func:`evaluation_reports`; None when
    no report measured it."""
    rows = reports[(reports["set"] == dataset) & (reports["model"] == model_version)]
    return None if rows.empty else rows.iloc[0].to_dict()


def evaluation_reports(root: str | Path = ".", globs: Iterable[str] = REPORT_GLOBS) -> pd.DataFrame:
    """The frozen sets' figures from ``scripts/evaluate.py`` summaries under ``root``: one row per
    report and variant, eval first then stress, each followed by its renamed and titled copies
    (:func:`engine.metrics.reported_set`), newest report first within a set. Columns
    :data:`REPORT_COLUMNS`: set ("eval", "eval_renamed", ..., from the summary's dataset file name), model
    (the version string the summary recorded), variant, n, the three figures and the four whole-answer
    figures (0..1; None where an older report lacks one), targets met
    (issue 15's, for the fine-tuned variant), report (the file read) and written (its modification
    time, UTC). Files that are not evaluation summaries of a frozen set are skipped; none found: an
    empty frame with these columns."""
    base = Path(root)
    paths = {path for pattern in globs for path in base.glob(pattern)}
    rows = [row for path in sorted(paths) for row in _report_rows(path)]
    if not rows:
        return pd.DataFrame(columns=REPORT_COLUMNS)
    frame = pd.DataFrame(rows)
    frame["_newest"] = -frame.pop("_mtime")
    frame = frame.sort_values(["set", "_newest", "variant"])  # eval, eval_renamed, eval_titled, stress, ...
    return frame[REPORT_COLUMNS].reset_index(drop=True)
