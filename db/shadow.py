"""Shadow mode's settings and runs: which share of new cases also goes to the challenger.

The routing and the challenger's answer are app.services.shadow's; here are the rows.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from db.audit import audit
from db.models import AdapterVersion, ModelRun, ShadowSetting, utcnow

SHADOW_VARIANT = "challenger"


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


def latest_challenger(session: Session) -> AdapterVersion | None:
    return session.exec(select(AdapterVersion).where(AdapterVersion.status == "challenger")
                        .order_by(col(AdapterVersion.id).desc())).first()


def shadow_run(session: Session, case_pk: int) -> ModelRun | None:
    """The latest challenger (shadow) answer stored for a case, if any."""
    stmt = select(ModelRun).where(ModelRun.case_pk == case_pk, ModelRun.variant == SHADOW_VARIANT)
    return session.exec(stmt.order_by(col(ModelRun.id).desc())).first()
