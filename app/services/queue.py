"""The review queue: one row per case with its status, flags and model answers, filtered and
sorted so cases that need a human (the guard said so, the models disagree, flagged ambiguous)
come first and reviewed cases last."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from db.cases import latest_by_variant, run_guard
from db.models import DONE_STATUSES, CaseRecord, ModelRun, Review
from policies import expected_decision, flags, parse_case


@dataclass(frozen=True)
class QueueFilter:
    """Empty fields match everything."""

    status: str | None = None
    flag: str | None = None
    region: str | None = None
    request_type: str | None = None
    disagree_only: bool = False
    preset: str | None = None  # one of PRESETS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Named filters beyond the fields above. ``agreed_clean``: every model answered, agrees with the
# guard's expected decision, no violation, no flag, not reviewed yet: safe to bulk-approve.
PRESETS: dict[str, str] = {
    "agreed_clean": "both models agree with the guard, no violation, no flag",
}


@dataclass(frozen=True)
class QueueRow:
    case_pk: int
    case_id: str
    region: str
    request_type: str
    source: str
    status: str
    expected: str
    decisions: dict[str, str | None] = field(default_factory=dict)  # variant -> decision (None: invalid)
    flags: tuple[str, ...] = ()
    violations: tuple[str, ...] = ()
    needs_human: bool = True
    priority: float = 0.0

    @property
    def disagree(self) -> bool:
        return "MODELS_DISAGREE" in self.flags

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def priority(
    status: str, row_flags: tuple[str, ...], violations: tuple[str, ...], needs_human: bool, answered: bool
) -> float:
    """Need-for-human score: higher first. Weights say what a reviewer should see soonest."""
    score = 0.0
    score += 8 if status == "flagged_ambiguous" else 0  # a person already said so
    score += 3 if "MODELS_DISAGREE" in row_flags else 0
    score += 3 if violations else 0
    score += 2 if needs_human and answered else 0
    score += 1 if row_flags else 0
    score += 0 if answered else 0.5  # not answered yet: unknown, above cases known to be fine
    return score


def _row(record: CaseRecord, runs: dict[str, ModelRun], status: str) -> QueueRow:
    case = parse_case(json.loads(record.case_json))
    guards = [run_guard(r) for r in runs.values()]
    row_flags = set(flags(case)) if not runs else set()
    violations: set[str] = set()
    for guard in guards:
        row_flags.update(guard.get("flags") or ())
        violations.update(guard.get("violations") or ())
    needs_human = not runs or any(not g.get("auto_send", False) for g in guards)
    ordered_flags = tuple(sorted(row_flags))
    return QueueRow(
        case_pk=record.id or 0,
        case_id=record.case_id,
        region=record.region,
        request_type=record.request_type,
        source=record.source,
        status=status,
        expected=expected_decision(case).decision,
        decisions={v: r.decision for v, r in sorted(runs.items())},
        flags=ordered_flags,
        violations=tuple(sorted(violations)),
        needs_human=needs_human,
        priority=priority(status, ordered_flags, tuple(violations), needs_human, bool(runs)),
    )


def _matches(row: QueueRow, f: QueueFilter) -> bool:
    return (
        (not f.status or row.status == f.status)
        and (not f.flag or f.flag in row.flags)
        and (not f.region or row.region == f.region)
        and (not f.request_type or row.request_type == f.request_type)
        and (not f.disagree_only or row.disagree)
        and (f.preset != "agreed_clean" or _agreed_clean(row))
    )


def _agreed_clean(row: QueueRow) -> bool:
    decisions = list(row.decisions.values())
    return (
        row.status == "pending"
        and len(decisions) >= 2
        and all(d == row.expected for d in decisions)
        and not row.violations
        and not row.flags
    )


def queue_rows(
    session: Session,
    qfilter: QueueFilter = QueueFilter(),
    versions: dict[str, str] | None = None,
    viewer: str | None = None,
) -> list[QueueRow]:
    """All cases matching ``qfilter``, neediest first, reviewed last.

    ``versions`` ({variant: model_version}) picks the runs of the current models; None takes the
    latest run of each variant. With ``viewer``, a second-opinion case shows that viewer's status
    until both reviewers are in (:func:`app.services.second_opinion.statuses_for_viewer`).
    """
    records = session.exec(select(CaseRecord).order_by(col(CaseRecord.id))).all()
    runs_by_case: dict[int, list[ModelRun]] = {}
    for run in session.exec(select(ModelRun).order_by(col(ModelRun.id))):
        runs_by_case.setdefault(run.case_pk, []).append(run)
    status_by_case: dict[int, str] = {}
    reviews_by_case: dict[int, list[Review]] = {}
    for review in session.exec(select(Review).order_by(col(Review.id))):
        status_by_case[review.case_pk] = review.status
        reviews_by_case.setdefault(review.case_pk, []).append(review)
    if viewer is not None:
        from app.services.second_opinion import statuses_for_viewer  # it imports this module's neighbours

        status_by_case.update(statuses_for_viewer(session, list(records), reviews_by_case, viewer))
    rows = [
        _row(
            r,
            latest_by_variant(runs_by_case.get(r.id or 0, []), versions),
            status_by_case.get(r.id or 0, "pending"),
        )
        for r in records
    ]
    rows = [row for row in rows if _matches(row, qfilter)]
    rows.sort(key=lambda row: (row.status in DONE_STATUSES, -row.priority, row.case_pk))
    return rows


@dataclass(frozen=True)
class QueueCounts:
    """How many rows a filter selects, and how many of them still need something."""

    matching: int
    pending: int
    flagged: int  # flagged ambiguous by a person
    violations: int  # a model answer the guard found a violation in
    disagree: int  # the models decided differently

    def sentence(self) -> str:
        """One line for the top of the queue, e.g. ``"12 matching · 9 pending · 1 flagged · ..."``."""
        return (
            f"**{self.matching}** matching · {self.pending} pending · {self.flagged} flagged · "
            f"{self.violations} with violations · {self.disagree} models disagree"
        )


def queue_counts(rows: list[QueueRow]) -> QueueCounts:
    """The counts of ``rows`` (what :func:`queue_rows` returned for the current filter)."""
    return QueueCounts(
        matching=len(rows),
        pending=sum(r.status == "pending" for r in rows),
        flagged=sum(r.status == "flagged_ambiguous" for r in rows),
        violations=sum(bool(r.violations) for r in rows),
        disagree=sum(r.disagree for r in rows),
    )
