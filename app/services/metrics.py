"""Figures for the Metrics tab, aggregated from the store as pandas DataFrames (long format, ready to plot).

- :func:`model_metrics`: per model version and variant, decision accuracy (decision == the guard's
  expected decision; an invalid answer counts as wrong), violation rate, JSON validity.
- :func:`reviewer_agreement`: share of approved/corrected cases whose final decision equals each model's.
- :func:`corrections_per_rule`: corrected cases by the rule id that decides them.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pandas as pd
from sqlmodel import Session, col, select

from app.services.queue import DONE_STATUSES
from db.cases import latest_by_variant, run_guard
from db.models import CaseRecord, ModelRun, Review
from policies import expected_decision, parse_case

METRIC_NAMES = ("decision accuracy", "violation rate", "JSON validity")


def model_metrics(session: Session) -> pd.DataFrame:
    """Columns: model_version, variant, metric, value (0..1), n."""
    groups: dict[tuple[str, str], list[ModelRun]] = defaultdict(list)
    for run in session.exec(select(ModelRun)):
        groups[(run.model_version, run.variant)].append(run)
    rows = []
    for (version, variant), runs in sorted(groups.items()):
        guards = [run_guard(r) for r in runs]
        n = len(runs)
        correct = sum(
            r.status == "ok" and r.decision == g.get("expected_decision")
            for r, g in zip(runs, guards, strict=True)
        )
        violating = sum(bool(g.get("violations")) for g in guards)
        valid = sum(r.status == "ok" for r in runs)
        for metric, count in zip(METRIC_NAMES, (correct, violating, valid), strict=True):
            rows.append(
                {"model_version": version, "variant": variant, "metric": metric, "value": count / n, "n": n}
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
