"""Saved queue filters: a reviewer names the queue's current filter and re-applies it later."""

from __future__ import annotations

import json
from dataclasses import asdict, fields

from sqlmodel import Session, col, select

from app.services.queue import QueueFilter
from db.audit import audit
from db.models import SavedFilter
from policies.text import TextError, clean_text

MAX_NAME_CHARS = 60  # one printable line (policies.text's "line" rules)


class SavedFilterError(ValueError):
    """A filter could not be saved or found; the message names the field (name)."""


def save_filter(session: Session, owner: str, name: str, qfilter: QueueFilter) -> SavedFilter:
    """Save (or replace) ``owner``'s filter called ``name``: one printable line of 1 to
    :data:`MAX_NAME_CHARS` characters once stripped. Raises :class:`SavedFilterError`."""
    if not isinstance(name, str | None):
        raise SavedFilterError(f"name: must be text (got {type(name).__name__})")
    name = (name or "").strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise SavedFilterError(f"name: give the filter a name of 1 to {MAX_NAME_CHARS} characters")
    try:
        clean_text(name, "name", MAX_NAME_CHARS, multiline=False, min_chars=1)
    except TextError as exc:
        raise SavedFilterError(str(exc)) from None
    row = session.exec(
        select(SavedFilter).where(SavedFilter.owner == owner, SavedFilter.name == name)
    ).first()
    before = row.model_dump() if row else None
    row = row or SavedFilter(owner=owner, name=name, filter_json="{}")
    row.filter_json = json.dumps(asdict(qfilter), sort_keys=True)
    session.add(row)
    session.flush()
    audit(session, owner, "save_filter", "saved_filter", row.id, before, row)
    return row


def saved_filters(session: Session, owner: str) -> list[SavedFilter]:
    """``owner``'s saved filters by name."""
    return list(
        session.exec(select(SavedFilter).where(SavedFilter.owner == owner).order_by(col(SavedFilter.name)))
    )


def load_filter(session: Session, owner: str, name: str) -> QueueFilter:
    """``owner``'s filter ``name`` as a QueueFilter; raises :class:`SavedFilterError` when unknown."""
    row = session.exec(
        select(SavedFilter).where(SavedFilter.owner == owner, SavedFilter.name == name)
    ).first()
    if row is None:
        raise SavedFilterError(f"name: you have no saved filter {name!r}")
    data = json.loads(row.filter_json)
    known = {f.name for f in fields(QueueFilter)}
    return QueueFilter(**{k: v for k, v in data.items() if k in known})
