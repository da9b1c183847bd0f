"""Drift watch: does recent traffic still look like the data the champion was trained on?

:func:`drift_report` compares the last N cases in the store with the training file along four
dimensions (region, request type, expected decision, guard flags) by total variation distance
(half the L1 distance of the two share vectors, 0..1) and the population stability index
(sum of (p - q) ln(p / q); > 0.2 is the usual "moved" mark), and writes one plain sentence per
dimension about the share that moved most. :func:`override_rates` says, per deciding rule, how
often reviewers overrode the fine-tuned (champion) answer. :func:`plot_drift` draws the shares.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from sqlmodel import Session, col, select

from db.cases import case_of
from db.models import CaseRecord, ModelRun, Review
from policies import Case, expected_decision, flags, parse_case

TVD_THRESHOLD = 0.10  # a dimension whose shares moved by more than this (in total) is flagged
PSI_THRESHOLD = 0.20
MIN_SAMPLE = 30  # fewer recent cases than this: shares are too noisy to call any dimension drifted
NO_FLAG = "(no flag)"
_EPS = 1e-4  # stands in for a zero share in PSI's logarithm


def _dimensions() -> dict[str, Callable[[Case], list[str]]]:
    return {
        "region": lambda c: [c.region],
        "request_type": lambda c: [c.request_type],
        "expected_decision": lambda c: [expected_decision(c).decision],
        "guard_flags": lambda c: list(flags(c, None)) or [NO_FLAG],
    }


@dataclass(frozen=True)
class DimensionDrift:
    """One dimension: shares in training and recently, the distances and a sentence about it."""

    dimension: str
    training: dict[str, float]
    recent: dict[str, float]
    tvd: float
    psi: float
    drifted: bool
    note: str


def shares(values: Iterable[str]) -> dict[str, float]:
    counts = Counter(values)
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())} if total else {}


def tvd(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance: 0 (same shares) .. 1 (disjoint)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def psi(expected: dict[str, float], actual: dict[str, float]) -> float:
    """Population stability index of ``actual`` against ``expected`` (zero shares -> a small epsilon)."""
    total = 0.0
    for k in set(expected) | set(actual):
        e, a = max(expected.get(k, 0.0), _EPS), max(actual.get(k, 0.0), _EPS)
        total += (a - e) * math.log(a / e)
    return total


def _note(dimension: str, training: dict[str, float], recent: dict[str, float], drifted: bool,
          judged: bool = True) -> str:
    key = max(set(training) | set(recent), key=lambda k: abs(recent.get(k, 0.0) - training.get(k, 0.0)))
    before, after = training.get(key, 0.0), recent.get(key, 0.0)
    verb = "rose" if after > before else "fell"
    label = dimension.replace("_", " ")
    sentence = f"{key} share {verb} from {before:.0%} to {after:.0%}"
    if not judged:
        return f"{label}: not judged, too few recent cases (largest move: {sentence})."
    return f"{label}: {sentence}." if drifted else f"{label}: stable (largest move: {sentence})."


@lru_cache(maxsize=4)
def _training_values(path: str, mtime: float) -> dict[str, list[str]]:
    dims = _dimensions()
    out: dict[str, list[str]] = {d: [] for d in dims}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                case = parse_case(json.loads(line)["input"])
                for d, fn in dims.items():
                    out[d] += fn(case)
    return out


def recent_cases(session: Session, last_n: int, include_eval: bool = False) -> list[Case]:
    """The last ``last_n`` cases added to the store (the frozen eval set's demo cases left out)."""
    stmt = select(CaseRecord).order_by(col(CaseRecord.id).desc()).limit(last_n)
    if not include_eval:
        stmt = stmt.where(CaseRecord.source != "eval")
    return [case_of(r) for r in session.exec(stmt)]


def drift_report(session: Session, training_path: str | Path, last_n: int = 200,
                 tvd_threshold: float = TVD_THRESHOLD, psi_threshold: float = PSI_THRESHOLD,
                 include_eval: bool = False,
                 min_sample: int = MIN_SAMPLE) -> tuple[int, list[DimensionDrift]]:
    """(number of recent cases, one :class:`DimensionDrift` per dimension); empty list without cases.

    A dimension is ``drifted`` when its TVD exceeds ``tvd_threshold`` or its PSI ``psi_threshold``,
    and there are at least ``min_sample`` recent cases (below that, none is, and each note says so).
    Errors: OSError / policies.InvalidCase for an unreadable training file.
    """
    cases = recent_cases(session, last_n, include_eval)
    if not cases:
        return 0, []
    path = Path(training_path)
    train_values = _training_values(str(path.resolve()), path.stat().st_mtime)
    report = []
    for dimension, fn in _dimensions().items():
        p, q = shares(train_values[dimension]), shares(v for c in cases for v in fn(c))
        d_tvd, d_psi = tvd(p, q), psi(p, q)
        judged = len(cases) >= min_sample
        drifted = judged and (d_tvd > tvd_threshold or d_psi > psi_threshold)
        report.append(DimensionDrift(dimension, p, q, round(d_tvd, 4), round(d_psi, 4), drifted,
                                     _note(dimension, p, q, drifted, judged)))
    return len(cases), report


def override_rates(session: Session, variant: str = "finetuned") -> pd.DataFrame:
    """Per deciding rule: reviewed cases with a ``variant`` answer, how many the reviewer overrode
    (final approved/corrected decision differs from that answer's), and the rate; worst first."""
    final: dict[int, Review] = {}
    for review in session.exec(select(Review).order_by(col(Review.id))):
        final[review.case_pk] = review
    counts: dict[str, list[int]] = {}
    for case_pk, review in final.items():
        if review.answer_json is None:
            continue
        run = session.exec(select(ModelRun).where(ModelRun.case_pk == case_pk, ModelRun.variant == variant)
                           .order_by(col(ModelRun.id).desc())).first()
        record = session.get(CaseRecord, case_pk)
        if run is None or record is None:
            continue
        rule = expected_decision(case_of(record)).rule
        overridden = json.loads(review.answer_json).get("decision") != run.decision
        n, o = counts.get(rule, [0, 0])
        counts[rule] = [n + 1, o + int(overridden)]
    rows = [[rule, n, o, o / n] for rule, (n, o) in counts.items()]
    frame = pd.DataFrame(rows, columns=["rule", "reviewed", "overridden", "override_rate"])
    return frame.sort_values(["override_rate", "reviewed"], ascending=False, ignore_index=True)


def plot_drift(report: list[DimensionDrift]) -> Any:
    """A matplotlib figure: per dimension, grouped bars of training vs recent shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(report), 1, figsize=(9, 2.6 * max(len(report), 1)), squeeze=False)
    for ax, dim in zip(axes[:, 0], report, strict=False):
        keys = sorted(set(dim.training) | set(dim.recent))
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [dim.training.get(k, 0) for k in keys], 0.4, label="training")
        ax.bar([x + 0.2 for x in xs], [dim.recent.get(k, 0) for k in keys], 0.4, label="recent")
        ax.set_xticks(list(xs), keys, rotation=30, fontsize=7, ha="right")
        mark = " (drifted)" if dim.drifted else ""
        ax.set_title(f"{dim.dimension}: TVD {dim.tvd:.2f}, PSI {dim.psi:.2f}{mark}", fontsize=9)
        ax.set_ylabel("share")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
