"""Second opinions: a share of cases (set by ops) is reviewed by two reviewers independently.

Assignment is deterministic: a case needs a second opinion when the hash of its case_id falls
below the share. Until two different reviewers have reviewed such a case, each user sees only
their own reviews (:func:`visible_reviews`), in the case view, the queue and through the API. When
the two verdicts differ the case goes to the adjudication queue for ops, until someone else reviews it.

Only reviews by reviewers and above are opinions (:func:`gives_opinions`, by the author's role in
the users table). An agent's flag is a signal: the case's status like any review (on a second-opinion
case, like every review there, seen by its author alone until both opinions are in), but it never
counts as the first or second opinion, so it never lifts the blinding, never enters the kappa pairs
or the adjudication queue, and does not adjudicate.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd
from sqlmodel import Session, col, select

from app.services.metrics import cohen_kappa
from db.audit import audit
from db.cases import case_of
from db.models import ROLES, CaseRecord, Review, ReviewSetting, User
from db.users import authorize
from policies import expected_decision

SHARE_KEY = "second_opinion_share"
OPINION_ROLE = "reviewer"  # the lowest role whose reviews count as opinions (agents' flags do not)
FLAG_LABEL = "FLAG"  # the verdict of a "flagged as ambiguous" review


class SettingError(ValueError):
    """A setting was refused; the message names the field (share)."""


def second_opinion_share(session: Session) -> float:
    """The share of cases (0..1) that get two independent reviews; 0 until ops set it."""
    row = session.get(ReviewSetting, SHARE_KEY)
    return float(row.value) if row else 0.0


def set_second_opinion_share(session: Session, actor: str, share: float) -> float:
    """Set the share (ops only: raises PermissionDenied below; SettingError outside 0..1)."""
    authorize(session, actor, "configure_reviews")
    if not 0.0 <= share <= 1.0:
        raise SettingError(f"share: must be between 0 and 1 (got {share})")
    row = session.get(ReviewSetting, SHARE_KEY)
    before = row.model_dump() if row else None
    row = row or ReviewSetting(key=SHARE_KEY, value="0", updated_by=actor)
    row.value, row.updated_by = repr(float(share)), actor
    session.add(row)
    audit(session, actor, "set_setting", "review_setting", SHARE_KEY, before, row)
    return share


def needs_second_opinion(case_id: str, share: float) -> bool:
    """Deterministic: the case's hash, as a number in [0, 1), is below ``share``."""
    digest = hashlib.sha256(f"second-opinion:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def verdict_label(review: Review) -> str:
    """What a review says about the decision: the answer's decision, or FLAG."""
    if review.status == "flagged_ambiguous" or not review.answer_json:
        return FLAG_LABEL
    return str(json.loads(review.answer_json).get("decision"))


def gives_opinions(role: str | None) -> bool:
    """Whether reviews by a user of ``role`` count as opinions: reviewer and above (not agents, not
    users the store does not know)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(OPINION_ROLE)


def _roles(session: Session, reviews: list[Review]) -> dict[str, str]:
    """The current role of each author of ``reviews`` (absent: not a known user)."""
    names = sorted({r.reviewer for r in reviews})
    if not names:
        return {}
    rows = session.exec(select(User.username, User.role).where(col(User.username).in_(names)))
    return dict(rows.all())


def _reviews(session: Session, case_pk: int) -> list[Review]:
    return list(session.exec(select(Review).where(Review.case_pk == case_pk).order_by(col(Review.id))))


def _opinions(reviews: list[Review], roles: dict[str, str]) -> list[Review]:
    return [r for r in reviews if gives_opinions(roles.get(r.reviewer))]


def _first_two(reviews: list[Review], roles: dict[str, str]) -> list[Review]:
    """The first opinion of each of the first two different reviewers (agents' reviews skipped)."""
    firsts: dict[str, Review] = {}
    for r in _opinions(reviews, roles):
        firsts.setdefault(r.reviewer, r)
    return list(firsts.values())[:2]


def is_double_review(session: Session, case_pk: int) -> bool:
    record = session.get(CaseRecord, case_pk)
    return record is not None and needs_second_opinion(record.case_id, second_opinion_share(session))


def visible_reviews(session: Session, case_pk: int, viewer: str | None) -> list[Review]:
    """The case's reviews ``viewer`` may see: all of them, except on a second-opinion case that
    two reviewers (reviewer role or above) have not both reviewed yet, where only the viewer's own.
    An agent's review never makes the second of the two."""
    reviews = _reviews(session, case_pk)
    if not reviews or not is_double_review(session, case_pk):
        return reviews
    if len(_first_two(reviews, _roles(session, reviews))) >= 2:
        return reviews
    return [r for r in reviews if r.reviewer == viewer]


def visible_status(session: Session, case_pk: int, viewer: str | None) -> str:
    """The case's status as ``viewer`` may see it (``pending`` while another's verdict is hidden)."""
    reviews = visible_reviews(session, case_pk, viewer)
    return reviews[-1].status if reviews else "pending"


@dataclass(frozen=True)
class OpinionPair:
    case_pk: int
    case_id: str
    rule: str
    first: Review
    second: Review
    adjudicated: bool

    @property
    def agree(self) -> bool:
        return verdict_label(self.first) == verdict_label(self.second)


def opinion_pairs(session: Session) -> list[OpinionPair]:
    """Second-opinion cases that two reviewers have reviewed, with the first verdict of each.
    Only opinions count (reviewer role or above): agents' reviews are neither half of a pair nor
    the third review that adjudicates it."""
    share = second_opinion_share(session)
    by_case: dict[int, list[Review]] = defaultdict(list)
    everyone: list[Review] = list(session.exec(select(Review).order_by(col(Review.id))))
    for r in everyone:
        by_case[r.case_pk].append(r)
    roles = _roles(session, everyone)
    out = []
    for pk, reviews in sorted(by_case.items()):
        two = _first_two(reviews, roles)
        record = session.get(CaseRecord, pk)
        if len(two) < 2 or record is None or not needs_second_opinion(record.case_id, share):
            continue
        pair = {t.reviewer for t in two}
        later = [r for r in _opinions(reviews, roles) if r.id > two[1].id and r.reviewer not in pair]  # type: ignore[operator]
        rule = expected_decision(case_of(record)).rule
        out.append(OpinionPair(pk, record.case_id, rule, two[0], two[1], adjudicated=bool(later)))
    return out


def adjudication_queue(session: Session) -> pd.DataFrame:
    """Disagreeing second-opinion cases no third person has reviewed since. Columns:
    case_pk, case_id, rule, first, first_verdict, second, second_verdict."""
    rows = [
        {
            "case_pk": p.case_pk,
            "case_id": p.case_id,
            "rule": p.rule,
            "first": p.first.reviewer,
            "first_verdict": verdict_label(p.first),
            "second": p.second.reviewer,
            "second_verdict": verdict_label(p.second),
        }
        for p in opinion_pairs(session)
        if not p.agree and not p.adjudicated
    ]
    cols = ["case_pk", "case_id", "rule", "first", "first_verdict", "second", "second_verdict"]
    return pd.DataFrame(rows, columns=cols)


def inter_reviewer_agreement(session: Session) -> pd.DataFrame:
    """Cohen's kappa between first and second reviewers, overall and per deciding rule.
    Columns: scope ("overall" or a rule id), kappa, agreement (observed share), n."""
    pairs = opinion_pairs(session)
    groups: dict[str, list[OpinionPair]] = defaultdict(list)
    for p in pairs:
        groups[p.rule].append(p)
    rows = []
    for scope, group in [("overall", pairs), *sorted(groups.items())]:
        labels = [(verdict_label(p.first), verdict_label(p.second)) for p in group]
        if not labels:
            continue
        rows.append(
            {
                "scope": scope,
                "kappa": cohen_kappa(labels),
                "agreement": sum(a == b for a, b in labels) / len(labels),
                "n": len(labels),
            }
        )
    return pd.DataFrame(rows, columns=["scope", "kappa", "agreement", "n"])


def statuses_for_viewer(
    session: Session, records: list[CaseRecord], reviews_by_case: dict[int, list[Review]], viewer: str
) -> dict[int, str]:
    """Queue statuses that would give away a hidden verdict, as ``viewer`` may see them: on a
    second-opinion case fewer than two reviewers (reviewer role or above; agents do not count) have
    reviewed, the viewer's own status, else ``pending`` (so the case stays in the second
    reviewer's queue). The same rule as :func:`visible_status`."""
    share = second_opinion_share(session)
    out: dict[int, str] = {}
    if share <= 0:
        return out
    roles = _roles(session, [r for reviews in reviews_by_case.values() for r in reviews])
    for record in records:
        reviews = reviews_by_case.get(record.id or 0, [])
        if reviews and len(_first_two(reviews, roles)) < 2 and needs_second_opinion(record.case_id, share):
            own = [r for r in reviews if r.reviewer == viewer]
            out[record.id or 0] = own[-1].status if own else "pending"
    return out
