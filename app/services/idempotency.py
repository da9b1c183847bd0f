"""Idempotent writes (issue 17, finding 7): a write sent with an idempotency key is done once; a
retry with the same key returns the first result, even when the first answer never reached the
client (the response is committed in the same transaction as the write)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from db.idempotency import find_key, request_sha, save_key
from db.store import Store
from policies.text import TextError, check_identifier


class IdempotencyError(ValueError):
    """An idempotency key was refused; the message starts with ``idempotency_key:``."""


def check_key(key: Any) -> str:
    """``key`` stripped ("" when none was given); a printable identifier of at most 64 characters."""
    if key is None or key == "":
        return ""
    try:
        return check_identifier(key, "idempotency_key")
    except TextError as exc:
        raise IdempotencyError(str(exc)) from None


def key_is_known(store: Store, actor: str, key: str) -> bool:
    """True when ``actor`` has already used ``key`` (a retry: it writes nothing, spends no quota)."""
    with store.session() as session:
        return bool(key) and find_key(session, actor, key) is not None


def keyed_write(
    store: Store,
    actor: str,
    key: str,
    endpoint: str,
    arguments: dict[str, Any],
    write: Callable[[Session], dict[str, Any]],
) -> tuple[dict[str, Any], bool]:
    """Run ``write(session)`` once per (``actor``, ``key``); returns (response, replayed).

    Without a key the write simply runs. With one, a first call runs the write and stores its
    response in the same transaction; a retry returns that response (``replayed`` True) and writes
    nothing. A key reused with other ``arguments`` or on another endpoint raises
    :class:`IdempotencyError`; errors of ``write`` store nothing, so a retry after a refusal runs again.
    """
    key = check_key(key)
    if not key:
        return store.write(write), False
    sha = request_sha(endpoint, arguments)

    def unit(session: Session) -> tuple[dict[str, Any], bool]:
        first = find_key(session, actor, key)
        if first is not None:
            if first.request_sha != sha:
                raise IdempotencyError(
                    f"idempotency_key: {key!r} was already used for another request ({first.endpoint}, "
                    f"{first.created_at:%Y-%m-%d %H:%M} UTC); use a new key for a new request"
                )
            return json.loads(first.response_json), True
        response = write(session)
        save_key(session, actor, key, endpoint, sha, response)
        return response, False

    return store.write(unit)
