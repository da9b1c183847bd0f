"""Queue tools: bulk-approve what the current filter selects (after a confirmation that shows the
count), undo a bulk action, and save / re-apply named filters. Every handler checks the caller's
role with :func:`app.ui.state.require` (refusals audited); ``db`` and the services check it again,
and :func:`app.services.bulk.undo_bulk` also checks ownership (own bulk actions; ops any)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import gradio as gr
from gradio.blocks import Block

from app.services.answers import engine_versions
from app.services.bulk import (
    BulkError,
    bulk_approve_once,
    bulk_candidates,
    undo_bulk,
    undoable_bulk_actions,
    why_none_selected,
)
from app.services.idempotency import IdempotencyError
from app.services.queue import QueueFilter
from app.services.saved_filters import SavedFilterError, load_filter, save_filter, saved_filters
from app.ui.state import Console, require
from db.users import PermissionDenied

ANY = "(any)"
FILTER_FIELDS = ("status", "flag", "region", "request_type", "disagree_only", "preset")


def queue_filter(*values: Any) -> QueueFilter:
    """The QueueFilter of the queue's filter widgets, in FILTER_FIELDS order ("(any)" matches all)."""
    pick = [None if v in (ANY, None, "") else v for v in values]
    data = dict(zip(FILTER_FIELDS, pick, strict=False))
    data["disagree_only"] = bool(data.get("disagree_only"))
    return QueueFilter(**data)


def widget_values(qfilter: QueueFilter) -> list[Any]:
    """The filter widgets' values for ``qfilter`` (the inverse of :func:`queue_filter`)."""
    data = asdict(qfilter)
    return [bool(data[f]) if f == "disagree_only" else (data[f] or ANY) for f in FILTER_FIELDS]


def _undo_choices(console: Console, user: str | None) -> list[tuple[str, int]]:
    """The bulk actions ``user`` may undo (their own; ops: all), newest first."""
    with console.store.session() as s:
        return [
            (f"#{a.id} · {a.count} cases · {a.actor} · {a.created_at:%Y-%m-%d %H:%M}", a.id or 0)
            for a in undoable_bulk_actions(s, user)
        ]


def _filter_names(console: Console, user: str | None) -> list[str]:
    with console.store.session() as s:
        return [f.name for f in saved_filters(s, user or "anonymous")]


def create_queue_tools(
    console: Console,
    filters: list[gr.components.Component],
    queue_outputs: list[Block],
    view_of: Callable[[QueueFilter, str | None], dict[Block, Any]],
) -> gr.Accordion:
    """Declare the bulk-action and saved-filter widgets under the queue and wire their events; returns
    the bulk-action panel (reviewers and above may use it).

    ``filters`` are the queue's filter widgets in FILTER_FIELDS order; ``queue_outputs`` (the table
    and its counts line) are refreshed with ``view_of(filter, viewer)`` after a bulk action or its undo.
    """
    with gr.Accordion("Bulk actions", open=False, elem_id="bulk-panel") as bulk_panel:
        with gr.Row():
            bulk_btn = gr.Button("Approve fine-tuned for all matching…", elem_id="bulk-approve")
            undo_pick = gr.Dropdown([], label="Bulk action", elem_id="bulk-undo-pick")
            undo_btn = gr.Button("Undo bulk action", elem_id="bulk-undo")
        with gr.Group(visible=False) as confirm_box:
            confirm_text = gr.Markdown(elem_id="bulk-confirm-text")
            with gr.Row():
                confirm_btn = gr.Button("Confirm", variant="primary", elem_id="bulk-confirm")
                cancel_btn = gr.Button("Cancel", elem_id="bulk-cancel")
        bulk_msg = gr.Markdown(elem_id="bulk-message")
    with gr.Accordion("Saved filters", open=False, elem_id="saved-filters") as saved_panel:
        with gr.Row():
            name = gr.Textbox(label="Name this filter", elem_id="filter-name")
            save_btn = gr.Button("Save filter", elem_id="filter-save")
            pick = gr.Dropdown([], label="Saved filters", elem_id="filter-pick")
            apply_btn = gr.Button("Apply", elem_id="filter-apply")
        filter_msg = gr.Markdown(elem_id="filter-message")

    def ask(
        status: Any, flag: Any, region: Any, rtype: Any, disagree: Any, preset: Any, request: gr.Request
    ) -> dict[Block, Any]:
        require(console, request, "approve")
        qfilter = queue_filter(status, flag, region, rtype, disagree, preset)
        versions = engine_versions(console.engine)
        with console.store.session() as s:
            n = len(bulk_candidates(s, qfilter, versions))
            why = why_none_selected(s, qfilter, versions) if n == 0 else ""
        if n == 0:  # said where it shows: the confirmation stays closed
            nothing = f"Nothing to approve. {why}"
            return {confirm_box: gr.Group(visible=False), bulk_msg: nothing, bulk_key: ""}
        # one idempotency key per confirmation: a double-clicked Confirm approves once
        return {
            confirm_box: gr.Group(visible=True),
            confirm_text: f"Approve the fine-tuned answer of **{n}** cases?",
            bulk_msg: "",
            bulk_key: uuid.uuid4().hex,
        }

    def confirm(
        status: Any,
        flag: Any,
        region: Any,
        rtype: Any,
        disagree: Any,
        preset: Any,
        bulk_key: str,
        request: gr.Request,
    ) -> dict[Block, Any]:
        user = require(console, request, "approve")
        qfilter = queue_filter(status, flag, region, rtype, disagree, preset)
        try:
            done, _ = bulk_approve_once(
                console.store, user, bulk_key or "", qfilter, engine_versions(console.engine)
            )
        except (BulkError, PermissionDenied, IdempotencyError) as exc:
            return {confirm_box: gr.Group(visible=False), bulk_msg: f"Not done: {exc}"}
        return {
            confirm_box: gr.Group(visible=False),
            bulk_msg: f"Bulk action #{done['bulk_action_id']}: approved {done['count']} cases.",
            undo_pick: gr.Dropdown(choices=_undo_choices(console, user), value=done["bulk_action_id"]),
            **view_of(qfilter, user),
        }

    def undo(
        bulk_id: int | None,
        status: Any,
        flag: Any,
        region: Any,
        rtype: Any,
        disagree: Any,
        preset: Any,
        request: gr.Request,
    ) -> dict[Block, Any]:
        user = require(console, request, "approve")
        if bulk_id is None:
            return {bulk_msg: "Pick a bulk action to undo."}
        try:
            with console.store.session() as s:
                undo_bulk(s, int(bulk_id), user)  # refuses someone else's unless ops (NotOwner)
        except (BulkError, PermissionDenied) as exc:
            return {bulk_msg: f"Not undone: {exc}"}
        return {
            bulk_msg: f"Undid bulk action #{bulk_id}.",
            undo_pick: gr.Dropdown(choices=_undo_choices(console, user), value=None),
            **view_of(queue_filter(status, flag, region, rtype, disagree, preset), user),
        }

    def save(
        filter_name: str,
        status: Any,
        flag: Any,
        region: Any,
        rtype: Any,
        disagree: Any,
        preset: Any,
        request: gr.Request,
    ) -> tuple[str, Any]:
        user = require(console, request, "compare")
        qfilter = queue_filter(status, flag, region, rtype, disagree, preset)
        try:
            with console.store.session() as s:
                save_filter(s, user, filter_name, qfilter)
        except SavedFilterError as exc:
            return f"Not saved: {exc}", gr.update()
        return f"Saved filter {filter_name.strip()!r}.", gr.Dropdown(choices=_filter_names(console, user))

    def apply(filter_name: str | None, request: gr.Request) -> dict[Block, Any]:
        user = require(console, request, "compare")
        try:
            with console.store.session() as s:
                qfilter = load_filter(s, user, filter_name or "")
        except SavedFilterError as exc:
            return {filter_msg: f"Not applied: {exc}"}
        return {
            filter_msg: f"Applied {filter_name!r}.",
            **dict(zip(filters, widget_values(qfilter), strict=True)),
        }

    def refresh_choices(request: gr.Request) -> tuple[Any, Any]:
        """The bulk-action list (only what the caller may undo) and the caller's saved filters."""
        user = require(console, request, "compare")
        return (
            gr.Dropdown(choices=_undo_choices(console, user)),
            gr.Dropdown(choices=_filter_names(console, user)),
        )

    def cancel(request: gr.Request) -> Any:
        """Close the confirmation (touches no data; the role is checked all the same)."""
        require(console, request, "compare")
        return gr.Group(visible=False)

    private = {"api_visibility": "private"}
    bulk_key = gr.State("")  # the open confirmation's idempotency key
    bulk_btn.click(ask, filters, [confirm_box, confirm_text, bulk_msg, bulk_key], **private)
    cancel_btn.click(cancel, None, confirm_box, **private)
    confirm_outputs = [confirm_box, bulk_msg, undo_pick, *queue_outputs]
    confirm_btn.click(confirm, [*filters, bulk_key], confirm_outputs, **private)
    undo_btn.click(undo, [undo_pick, *filters], [bulk_msg, undo_pick, *queue_outputs], **private)
    save_btn.click(save, [name, *filters], [filter_msg, pick], **private)
    apply_btn.click(apply, [pick], [filter_msg, *filters], **private)
    gr.on([bulk_panel.expand, saved_panel.expand], refresh_choices, None, [undo_pick, pick], **private)
    return bulk_panel
