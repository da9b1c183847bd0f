"""Shadow mode: a share of new cases also gets the challenger's answer, stored as variant ``challenger``.

Ops set the share (0 = off) with :func:`set_shadow_share`; :func:`shadow_answer` is called after a
new case was compared: when the case falls in the share (a stable hash of its case id, so the same
case always routes the same way) and a challenger version exists, the engine loads that adapter
as variant ``challenger`` (once per version, on the shared base) and its answer is stored as a
model run. Reviewers see it in the case view; it never replaces the champion's answer.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime
from typing import Any

from sqlmodel import Field, Session, SQLModel, col, select

from db.audit import audit
from db.cases import case_of, get_case, save_run
from db.models import ModelRun, utcnow
from db.store import Store
from db.versions import AdapterVersion

SHADOW_VARIANT = "challenger"
_LOCK = threading.Lock()  # one engine call at a time from shadow routing


class ShadowSetting(SQLModel, table=True):
    """The one row (id 1) saying which share of new cases also goes to the challenger."""

    __tablename__ = "shadow_settings"
    id: int | None = Field(default=None, primary_key=True)
    share: float = 0.0
    updated_by: str = "system"
    updated_at: datetime = Field(default_factory=utcnow)


def shadow_share(session: Session) -> float:
    row = session.get(ShadowSetting, 1)
    return row.share if row else 0.0


def set_shadow_share(session: Session, actor: str, share: float) -> ShadowSetting:
    """Set the share (0..1) of new cases answered by the challenger too; audited. ValueError outside 0..1."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: must be between 0 and 1, got {share}")
    row = session.get(ShadowSetting, 1)
    before = row.model_dump() if row else None
    row = row or ShadowSetting(id=1)
    row.share, row.updated_by, row.updated_at = share, actor, utcnow()
    session.add(row)
    audit(session, actor, "set_shadow_share", "shadow_settings", 1, before, row)
    return row


def routed(case_id: str, share: float) -> bool:
    """Whether ``case_id`` falls in ``share`` (stable across runs and processes)."""
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def latest_challenger(session: Session) -> AdapterVersion | None:
    return session.exec(select(AdapterVersion).where(AdapterVersion.status == "challenger")
                        .order_by(col(AdapterVersion.id).desc())).first()


def shadow_answer(store: Store, engine: Any, case_pk: int, actor: str) -> ModelRun | None:
    """Answer stored case ``case_pk`` with the newest challenger when shadow routing picks it.

    Out: the stored run, or None (share 0, not routed, no challenger, or an engine that cannot
    load adapters). PEFT errors for a broken adapter dir propagate.
    """
    with store.session() as s:
        share, challenger = shadow_share(s), latest_challenger(s)
        case = case_of(get_case(s, case_pk))
    swap = getattr(engine, "swap_adapter", None)
    if challenger is None or swap is None or not routed(case.case_id, share):
        return None
    with _LOCK:
        swap(SHADOW_VARIANT, challenger.path, version=challenger.name)
        answer = engine.decide(case, variant=SHADOW_VARIANT)
    with store.session() as s:
        return save_run(s, case_pk, answer, actor)


def shadow_run(session: Session, case_pk: int) -> ModelRun | None:
    """The latest challenger (shadow) answer stored for a case, if any."""
    stmt = select(ModelRun).where(ModelRun.case_pk == case_pk, ModelRun.variant == SHADOW_VARIANT)
    return session.exec(stmt.order_by(col(ModelRun.id).desc())).first()
