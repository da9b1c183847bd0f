"""The console's shared state and the small helpers every handler uses: who is asking, may they,
and how domain errors become messages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from app.services.exports import ExportError
from app.services.idempotency import IdempotencyError
from app.services.paths import UnsafePath
from app.services.quotas import QuotaExceeded, Quotas
from app.services.reviews import ReviewError
from db.store import Store
from db.users import PermissionDenied, UserError, authorize, role_allows, role_of_user
from policies import InvalidInput

ACTION_PERMISSION = {
    "approve_base": "approve",
    "approve_finetuned": "approve",
    "flag": "flag",
    "correct": "correct",
}


@dataclass
class Console:
    """Everything a tab needs: the engine, the store and where files go. One per app."""

    engine: Any
    store: Store
    export_dir: Path = Path("var/exports")
    eval_fingerprints: set[str] = field(default_factory=set)  # eval-set case ids and body hashes
    batch_root: Path = Path("data")  # server-side JSONL files for batch runs must lie under it
    prefetch: bool = True  # answer the next queued case in the background while one is read
    quotas: Quotas = field(default_factory=Quotas)  # per-user write quotas (build_app: in the store)
    name: str = "console"  # this console's address (host:port): batch runs it owned resume on its restart


@dataclass
class TabLoad:
    """What a tab shows when it is opened: ``show(request)`` returns ``{component: value}`` for
    ``outputs``; ``need`` is the permission the tab is shown for (the interface loads a tab only for
    a role that may see it, so opening one never shows a refusal)."""

    show: Callable[[gr.Request], dict[Any, Any]]
    outputs: list[Any]
    need: str


def username_of(request: gr.Request | None) -> str | None:
    """The logged-in user of a request (None when the app runs without auth)."""
    return getattr(request, "username", None) if request is not None else None


def require(console: Console, request: gr.Request | None, action: str) -> str:
    """The caller's username when their role allows ``action``; else gr.Error (the refusal is audited)."""
    user = username_of(request)
    try:
        with console.store.session() as session:
            authorize(session, user, action)
    except PermissionDenied as exc:
        raise gr.Error(str(exc), title="Not allowed", print_exception=False) from exc
    return user or "anonymous"


def allows(store: Store, request: gr.Request | None, action: str) -> bool:
    """Whether the caller's role allows ``action``, refusing and auditing nothing: for what runs
    without a click of theirs (a timer's tick, the load of a tab hidden from them), where
    :func:`require` would fill the audit log with refusals."""
    with store.session() as session:
        return role_allows(role_of_user(session, username_of(request)), action)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the domain's specific errors into gr.Error messages that name the field at fault."""
    try:
        yield
    except InvalidInput as exc:
        raise gr.Error(
            f"invalid {exc.kind}: {exc}", title=f"Invalid {exc.kind}", print_exception=False
        ) from exc
    except QuotaExceeded as exc:
        raise gr.Error(str(exc), title="Over quota", print_exception=False) from exc
    except (ReviewError, ExportError, UserError, UnsafePath, IdempotencyError) as exc:
        raise gr.Error(str(exc), print_exception=False) from exc
    except KeyError as exc:
        raise gr.Error(str(exc.args[0]) if exc.args else "case_id: not found", print_exception=False) from exc
