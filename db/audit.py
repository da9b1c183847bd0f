"""The append-only audit log. Every write function in ``db/`` calls :func:`audit` in the same session,
so the change and its audit entry commit (or roll back) together."""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from db.models import AuditEntry

# Never copied into the audit log.
_SECRET_FIELDS = frozenset({"password_hash"})


def snapshot(obj: SQLModel | dict[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-safe picture of a row (secrets removed), for the before/after columns."""
    if obj is None:
        return None
    data = obj if isinstance(obj, dict) else obj.model_dump()
    return {k: v for k, v in data.items() if k not in _SECRET_FIELDS}


def audit(
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    before: SQLModel | dict[str, Any] | None = None,
    after: SQLModel | dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry (who, what, which entity, before -> after) to the session's transaction."""

    def dump(obj: SQLModel | dict[str, Any] | None) -> str | None:
        snap = snapshot(obj)
        return None if snap is None else json.dumps(snap, default=str, sort_keys=True)

    entry = AuditEntry(
        actor=actor,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        before_json=dump(before),
        after_json=dump(after),
    )
    session.add(entry)
    return entry


def audit_entries(
    session: Session, *, actor: str | None = None, action: str | None = None, entity: str | None = None
) -> list[AuditEntry]:
    """Entries in the order written, optionally filtered."""
    stmt = select(AuditEntry).order_by(col(AuditEntry.id))
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if entity is not None:
        stmt = stmt.where(AuditEntry.entity == entity)
    return list(session.exec(stmt))
