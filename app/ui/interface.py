"""The page, assembled in one place: one tab per task, each declared by its own module."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from app.services.auth import CLIENT_ADDRESS, ClientAddressMiddleware, Clock, ProcessRate, login
from app.services.http_limits import MAX_UPLOAD_BYTES, RequestLimits
from app.services.jobs import Runner
from app.services.queue import QueueFilter
from app.services.quotas import Quotas
from app.ui import api
from app.ui.batch_tab import create_batch_tab
from app.ui.case_tab import Updates, create_case_tab
from app.ui.drift_tab import create_drift_tab
from app.ui.errors import install as install_error_shape
from app.ui.export_tab import create_export_tab
from app.ui.look import look_options
from app.ui.metrics_tab import create_metrics_tab
from app.ui.models_tab import create_models_tab
from app.ui.queue_tab import create_queue_tab
from app.ui.review_tab import create_review_tab
from app.ui.shortcuts import SHORTCUTS_JS, help_html
from app.ui.state import Console, TabLoad, allows, username_of
from app.ui.try_tab import create_try_tab
from db.store import Store
from db.users import role_allows, role_of_user

TITLE = "PolicyOps Console"


def role_view(role: str | None, gated: list[tuple[Any, str]]) -> Updates:
    """``{component: visibility}`` for a user of ``role``: each gated component is shown only when
    the role allows the permission it needs."""
    return {component: gr.update(visible=role_allows(role, need)) for component, need in gated}


def shown(store: Store, load: TabLoad) -> Callable[[gr.Request], Updates]:
    """The handler of a tab's ``select``: ``load.show`` for a role that may see the tab; for any
    other caller (the tab is hidden from them) nothing changes and nothing is refused."""

    def on_select(request: gr.Request) -> Updates:
        if not allows(store, request, load.need):
            return {component: gr.skip() for component in load.outputs}
        return load.show(request)

    return on_select


def make_auth(store: Store, *, clock: Clock | None = None) -> Callable[[str, str], Awaitable[bool]]:
    """The ``launch(auth=...)`` callable: :func:`app.services.auth.login` (scrypt check, throttling,
    lockout, audit). Gradio passes only the user name and password; the client address is known when
    the app runs :class:`~app.services.auth.ClientAddressMiddleware`, else failures are also limited
    per process (one :class:`~app.services.auth.ProcessRate` per callable).

    A coroutine: Gradio awaits it on its event loop, and the check (scrypt, database writes) runs in a
    worker thread with the request's context (its client address), so a sign-in never stalls the
    other users' requests."""
    rate = ProcessRate()

    def check(username: str, password: str) -> bool:
        return login(store, username, password, CLIENT_ADDRESS.get(), clock=clock, rate=rate).ok

    async def check_off_the_loop(username: str, password: str) -> bool:
        return await asyncio.to_thread(check, username, password)  # copies the context: the address

    return check_off_the_loop


def serve_options(store: Store, *, clock: Clock | None = None) -> dict[str, Any]:
    """The ``launch()`` arguments every console is served with (the CLI and the tests alike): the
    login, no extra file paths, uploads capped and refused, request bodies capped, and the client
    address known to the login throttle."""
    return {
        "auth": make_auth(store, clock=clock),
        "auth_message": "PolicyOps Console: sign in",
        "allowed_paths": [],
        "max_file_size": MAX_UPLOAD_BYTES,
        "app_kwargs": {"middleware": [Middleware(ClientAddressMiddleware), Middleware(RequestLimits)]},
        **look_options(),  # theme (fonts served by the console itself) and CSS: app/ui/look.py
    }


def build_app(
    engine: Any,
    store: Store,
    *,
    export_dir: Path = Path("var/exports"),
    eval_fingerprints: set[str] | None = None,
    batch_root: Path = Path("data"),
    runner: Runner | None = None,
    prefetch: bool = True,
    console_name: str = "console",
) -> gr.Blocks:
    """The console over ``engine`` and ``store``. Launch it with ``**serve_options(store)``.

    ``prefetch``: answer the next queued case in the background while a reviewer reads one.
    ``console_name``: this console's address (``host:port``); batch runs it leaves unfinished when it
    stops resume on its next start.
    A URL with ``?case=C-000123`` opens that case after login.
    """
    console = Console(
        engine=engine,
        store=store,
        export_dir=Path(export_dir),
        eval_fingerprints=eval_fingerprints or set(),
        batch_root=Path(batch_root),
        prefetch=prefetch,
        name=console_name,
        quotas=Quotas(store=store),  # in the store: every console over it draws on the same buckets
    )
    # Gradio's temp files (none while uploads are refused) are deleted hourly once a day old
    with gr.Blocks(title=TITLE, delete_cache=(3600, 86400)) as demo:
        api.register(console)  # first, so the stable api_names are theirs
        with gr.Row(equal_height=True):
            whoami = gr.Markdown(f"# {TITLE}")
            # Gradio's login serves /logout (relative: the console may be mounted under a path)
            gr.Button("Log out", link="logout", size="sm", scale=0, min_width=90, elem_id="logout")
        gr.HTML(help_html(), elem_id="shortcut-help")  # shown by the ? key, on every tab
        # the tabs a role may not need start hidden: on load, each role is shown those it may use
        # (Gradio 6.31's page shows a tab on an update, but does not hide one)
        with gr.Tabs() as tabs:
            with gr.Tab("Queue", id="queue") as queue_tab:
                queue = create_queue_tab(console)
            with gr.Tab("Case", id="case"):
                case = create_case_tab(console)
            with gr.Tab("Try a case", id="try"):
                create_try_tab(console)
            with gr.Tab("Batch run", id="batch", visible=False) as batch_tab:
                batch = create_batch_tab(console)
            with gr.Tab("Metrics", id="metrics") as metrics_tab:
                metrics = create_metrics_tab(console)
            with gr.Tab("Export", id="export", visible=False) as export_tab:
                export = create_export_tab(console)
            with gr.Tab("Models", id="models", visible=False) as models_tab:
                models = create_models_tab(console, runner or Runner(store))
            with gr.Tab("Drift", id="drift", visible=False) as drift_tab:
                drift = create_drift_tab(console)
            with gr.Tab("Reviews", id="reviews", visible=False) as reviews_tab:
                reviews = create_review_tab(console)
        # what a role must allow before it is shown (the handlers check the role all the same)
        gated = [(batch_tab, "batch"), (export_tab, "export"), (models_tab, "retrain"),
                 (drift_tab, "retrain"), (reviews_tab, "approve"), *queue.gated, *case.gated]
        # each of these tabs loads its figures when opened: never a placeholder table, never stale
        loads = ((batch_tab, batch), (metrics_tab, metrics), (export_tab, export), (drift_tab, drift),
                 (reviews_tab, reviews))
        for tab, load in loads:
            tab.select(shown(store, load), None, load.outputs, api_visibility="private")
        # back to the queue: the reviews just saved show (status, counts), with the filters as set
        queue_tab.select(queue.show, queue.filters, [queue.table, queue.counts], api_visibility="private")
        # the Models tab brings its export list and versions up to date when opened (after an export)
        models_tab.select(
            models.refresh, models.refresh_inputs, models.refresh_outputs, api_visibility="private"
        )

        def open_selected(evt: gr.SelectData, request: gr.Request) -> Updates:
            row = evt.row_value or []
            try:
                pk = int(row[0])  # the queue's "#" column: the case's row id
            except (IndexError, TypeError, ValueError):
                raise gr.Error("case_id: pick a row of the queue") from None
            return {**case.open(pk, request), tabs: gr.Tabs(selected="case")}

        def on_load(request: gr.Request) -> Updates:
            user = username_of(request)
            with store.session() as s:
                role = role_of_user(s, user)
            head = {
                whoami: f"# {TITLE}\nSigned in as **{user}** ({role})",
                **queue.view(QueueFilter(), user),  # the table and its counts line
                **role_view(role, gated),  # each role sees the tabs and buttons it may use
            }
            link = dict(request.query_params).get("case") if request else None
            if not link:  # a link ``?case=C-000123`` opens that case
                return head
            try:
                return {**head, **case.open_ref(link, request), tabs: gr.Tabs(selected="case")}
            except gr.Error as exc:  # an unknown case in the link: say so, keep the page usable
                gr.Warning(f"Link: {exc.message}")
                return head

        queue.table.select(open_selected, None, [*case.outputs, tabs], api_visibility="private")
        load_outputs = [whoami, queue.table, queue.counts, *case.outputs, tabs, *(c for c, _ in gated)]
        demo.load(on_load, None, load_outputs, api_visibility="private")
        demo.load(None, None, None, js=SHORTCUTS_JS)  # keyboard-first review (app/shortcuts.py)
    return install_error_shape(demo)  # every handler: refusals name the field, one log line each
