"""Idempotency keys: the stored first response of a keyed write (issue 17, finding 7).

Persistence only: what a retry means is the caller's (``app.services.idempotency``). The table is
``idempotency_keys`` (:class:`db.models.IdempotencyKey`, Alembic revision 0002_idempotency_keys).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlmodel import Session, select

from db.models import IdempotencyKey


def request_sha(endpoint: str, arguments: dict[str, Any]) -> str:
    """sha256 over the endpoint and its arguments (JSON, keys sorted)."""
    text = json.dumps([endpoint, arguments], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def find_key(session: Session, actor: str, key: str) -> IdempotencyKey | None:
    """The stored response of ``actor``'s ``key``, if any."""
    return session.exec(
        select(IdempotencyKey).where(IdempotencyKey.actor == actor, IdempotencyKey.key == key)
    ).first()


def save_key(
    session: Session, actor: str, key: str, endpoint: str, sha: str, response: dict[str, Any]
) -> IdempotencyKey:
    """Record ``response`` as the answer to ``actor``'s ``key`` (in the caller's transaction)."""
    row = IdempotencyKey(
        actor=actor, key=key, endpoint=endpoint, request_sha=sha,
        response_json=json.dumps(response, sort_keys=True, ensure_ascii=False),
    )
    session.add(row)
    session.flush()
    return row
