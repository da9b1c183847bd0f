"""Write quotas' token buckets, one row per (user, kind of write). The arithmetic is
app.services.quotas'; run both in one write transaction (``Store.write``) so consoles take turns."""

from __future__ import annotations

from sqlmodel import Session

from db.models import QuotaBucket


def get_bucket(session: Session, actor: str, kind: str) -> tuple[float, float] | None:
    """``(tokens, at)`` of ``actor``'s ``kind`` bucket, or None before their first write of the kind."""
    row = session.get(QuotaBucket, (actor, kind))
    return None if row is None else (row.tokens, row.at)


def put_bucket(session: Session, actor: str, kind: str, tokens: float, at: float) -> None:
    row = session.get(QuotaBucket, (actor, kind)) or QuotaBucket(actor=actor, kind=kind, tokens=tokens, at=at)
    row.tokens, row.at = tokens, at
    session.add(row)
