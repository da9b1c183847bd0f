"""Drift watch: does recent traffic still look like the data the champion was trained on?

:func:`drift_report` compares the last N cases in the store with the training file along four
dimensions (region, request type, expected decision, guard flags) by total variation distance
(half the L1 distance of the two share vectors, 0..1) and the population stability index
(sum of (p - q) ln(p / q); > 0.2 is the usual "moved" mark), and writes one plain sentence per
dimension about the share that moved most. Each distance comes with how sure it is
(:func:`tvd_confidence`): a p-value against chance (how often samples of the same size drawn from the
training data move as far), the distance chance alone reaches at that size, and a 95% interval of
the TVD (the observed one, give or take how far resampling the recent cases moves their shares).
:func:`override_rates` says, per deciding rule, how often reviewers overrode the fine-tuned (champion)
answer. :func:`plot_drift` draws the shares.
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

import numpy as np
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
ALPHA = 0.05  # a move chance alone would make more often than this is not called drift
DRAWS = 1000  # simulated samples per dimension: the p-value's resolution is 1 / (DRAWS + 1)
SEED = 0  # the same store and training file give the same figures on every look
_CELLS_PER_CHUNK = 2_000_000  # draws x cases x values held in memory at once while simulating


def _dimensions() -> dict[str, Callable[[Case], list[str]]]:
    return {
        "region": lambda c: [c.region],
        "request_type": lambda c: [c.request_type],
        "expected_decision": lambda c: [expected_decision(c).decision],
        "guard_flags": lambda c: list(flags(c, None)) or [NO_FLAG],
    }


@dataclass(frozen=True)
class Confidence:
    """How far chance alone moves a dimension's shares, for the number of recent cases at hand."""

    p_value: float  # share of same-size samples drawn from the training data at least this far (TVD)
    chance_tvd: float  # the TVD such samples stay under 95% of the time
    tvd_low: float  # 95% interval of the TVD: the observed one +- how far resampling moves the recent shares
    tvd_high: float


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
    confidence: Confidence | None = None  # None: no recent case to judge


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
          judged: bool = True, confidence: Confidence | None = None) -> str:
    key = max(set(training) | set(recent), key=lambda k: abs(recent.get(k, 0.0) - training.get(k, 0.0)))
    before, after = training.get(key, 0.0), recent.get(key, 0.0)
    verb = "rose" if after > before else "fell"
    label = dimension.replace("_", " ")
    sentence = f"{key} share {verb} from {before:.0%} to {after:.0%}"
    chance = (f" (p = {confidence.p_value:.3f}; chance alone moves the TVD up to {confidence.chance_tvd:.2f} "
              "at this sample size)") if confidence else ""
    if not judged:
        return f"{label}: not judged, too few recent cases (largest move: {sentence}){chance}."
    if drifted:
        return f"{label}: {sentence}{chance}."
    return f"{label}: stable (largest move: {sentence}){chance}."


@lru_cache(maxsize=4)
def _training_values(path: str, mtime: float) -> dict[str, list[tuple[str, ...]]]:
    """Per dimension, each training case's values (a case may carry several guard flags)."""
    dims = _dimensions()
    out: dict[str, list[tuple[str, ...]]] = {d: [] for d in dims}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                case = parse_case(json.loads(line)["input"])
                for d, fn in dims.items():
                    out[d].append(tuple(fn(case)))
    return out


def _counts(rows: list[tuple[str, ...]], index: dict[str, int]) -> np.ndarray:
    """One row per case, one column per value: how often the case carries it."""
    out = np.zeros((len(rows), len(index)))
    for i, values in enumerate(rows):
        for v in values:
            out[i, index[v]] += 1
    return out


def _sample_tvds(pool: np.ndarray, size: int, reference: np.ndarray, draws: int,
                 rng: np.random.Generator) -> np.ndarray:
    """TVD from ``reference`` of ``draws`` samples of ``size`` cases drawn with replacement from ``pool``."""
    chunk = max(1, _CELLS_PER_CHUNK // max(size * pool.shape[1], 1))
    out = []
    for start in range(0, draws, chunk):
        picks = rng.integers(0, len(pool), size=(min(chunk, draws - start), size))
        counts = pool[picks].sum(axis=1)
        sample_shares = counts / counts.sum(axis=1, keepdims=True)
        out.append(0.5 * np.abs(sample_shares - reference).sum(axis=1))
    return np.concatenate(out)


def tvd_confidence(training: list[tuple[str, ...]], recent: list[tuple[str, ...]], draws: int = DRAWS,
                   seed: int = SEED) -> Confidence:
    """How sure the TVD between ``training`` and ``recent`` (each case's values) is.

    ``p_value``: the share of ``draws`` samples of ``len(recent)`` training cases (with replacement)
    whose TVD from the training shares is at least the observed one (a Monte Carlo test, counting
    the observed sample itself). ``chance_tvd``: the 95th percentile of those TVDs. ``tvd_low`` /
    ``tvd_high``: the observed TVD +- e, clipped to 0..1, where e is the 95th percentile of the TVD
    between resamples of the recent cases and the recent shares themselves. The TVD moves at most as
    far as the shares do (triangle inequality), so the interval holds the true TVD about 95% of the
    time, and it always holds the observed one. (Percentiles of the resampled TVD itself would not:
    resampling adds its own noise on top of the observed TVD, so when that is small, below the noise,
    the whole percentile interval lies above it.) ValueError when either side is empty.
    """
    if not training or not recent:
        raise ValueError("training and recent: need at least one case each")
    keys = sorted({v for values in (*training, *recent) for v in values})
    index = {k: i for i, k in enumerate(keys)}
    pool, sample = _counts(training, index), _counts(recent, index)
    reference = pool.sum(axis=0) / pool.sum()
    observed = 0.5 * float(np.abs(sample.sum(axis=0) / sample.sum() - reference).sum())
    rng = np.random.default_rng(seed)
    chance = _sample_tvds(pool, len(recent), reference, draws, rng)
    moves = _sample_tvds(sample, len(recent), sample.sum(axis=0) / sample.sum(), draws, rng)
    p_value = (1 + int((chance >= observed - 1e-12).sum())) / (draws + 1)
    reach = float(np.percentile(moves, 95))
    return Confidence(round(p_value, 4), round(float(np.percentile(chance, 95)), 4),
                      round(max(0.0, observed - reach), 4), round(min(1.0, observed + reach), 4))


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
    chance alone would rarely move it that far (p-value below :data:`ALPHA`, see
    :func:`tvd_confidence`), and there are at least ``min_sample`` recent cases (below that, none
    is, and each note says so). Errors: OSError / policies.InvalidCase for an unreadable training file.
    """
    cases = recent_cases(session, last_n, include_eval)
    if not cases:
        return 0, []
    path = Path(training_path)
    train_values = _training_values(str(path.resolve()), path.stat().st_mtime)
    report = []
    judged = len(cases) >= min_sample
    for dimension, fn in _dimensions().items():
        recent = [tuple(fn(c)) for c in cases]
        p = shares(v for values in train_values[dimension] for v in values)
        q = shares(v for values in recent for v in values)
        d_tvd, d_psi = tvd(p, q), psi(p, q)
        sure = tvd_confidence(train_values[dimension], recent)
        moved = d_tvd > tvd_threshold or d_psi > psi_threshold
        drifted = judged and moved and sure.p_value < ALPHA
        report.append(DimensionDrift(dimension, p, q, round(d_tvd, 4), round(d_psi, 4), drifted,
                                     _note(dimension, p, q, drifted, judged, sure), sure))
    return len(cases), report


def drift_table(count: int, report: list[DimensionDrift], min_sample: int = MIN_SAMPLE) -> pd.DataFrame:
    """The report as a table, one row per dimension: TVD with its 95% interval, the TVD chance alone
    reaches at this sample size, the p-value, PSI and the verdict ("too few cases" below ``min_sample``)."""
    columns = ["dimension", "TVD", "TVD 95% CI", "chance TVD", "p-value", "PSI", "drifted"]
    rows = []
    for d in report:
        c = d.confidence
        verdict = "too few cases" if count < min_sample else ("yes" if d.drifted else "no")
        rows.append([d.dimension, d.tvd, f"{c.tvd_low:.2f}–{c.tvd_high:.2f}" if c else "",
                     c.chance_tvd if c else None, c.p_value if c else None, d.psi, verdict])
    return pd.DataFrame(rows, columns=columns)


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
    """A matplotlib figure: per dimension, grouped bars of training vs recent shares (in percent),
    titled with the distances and the p-value; one legend above the panels, clear of the bars."""
    from matplotlib.figure import Figure  # not pyplot: a server draws many figures and keeps none
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(9, 0.6 + 2.9 * max(len(report), 1)), layout="constrained")
    axes = fig.subplots(max(len(report), 1), 1, squeeze=False)[:, 0]
    for ax, dim in zip(axes, report, strict=False):
        keys = sorted(set(dim.training) | set(dim.recent))
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [dim.training.get(k, 0) for k in keys], 0.4, label="training")
        ax.bar([x + 0.2 for x in xs], [dim.recent.get(k, 0) for k in keys], 0.4, label="recent")
        ax.set_xticks(list(xs), keys, rotation=20, fontsize=8, ha="right")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylim(0, min(1.0, max([*dim.training.values(), *dim.recent.values(), 0.05]) * 1.15))
        chance = f", p {dim.confidence.p_value:.3f}" if dim.confidence else ""
        mark = " — drifted" if dim.drifted else ""
        ax.set_title(f"{dim.dimension.replace('_', ' ')}: TVD {dim.tvd:.2f}{chance}, PSI {dim.psi:.2f}{mark}",
                     fontsize=10, loc="left")
        ax.set_ylabel("share of cases")
    if report:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", ncols=2, fontsize=9)
    return fig
