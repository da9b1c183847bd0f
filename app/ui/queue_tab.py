"""Queue tab: every case with its status, flags and the models' decisions, neediest first."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from app.services.answers import engine_versions
from app.services.queue import PRESETS, QueueFilter, queue_rows
from app.ui.queue_tools import create_queue_tools, queue_filter
from app.ui.state import Console, require
from db.models import REVIEW_STATUSES
from policies import FLAGS
from policies.schema import REGIONS, REQUEST_TYPES

COLUMNS = [
    "#",
    "case_id",
    "status",
    "region",
    "request",
    "expected",
    "base",
    "finetuned",
    "flags",
    "violations",
    "priority",
]
ANY = "(any)"


@dataclass
class QueueTab:
    table: gr.Dataframe
    refresh: gr.Button
    filters: list[gr.components.Component]
    gated: list[tuple[gr.blocks.Block, str]]  # (component, the permission it needs to be shown)


def queue_frame(console: Console, qfilter: QueueFilter, viewer: str | None = None) -> pd.DataFrame:
    """The queue as ``viewer`` sees it (sorting and filtering happen in :func:`db.queue_rows`)."""
    with console.store.session() as s:
        rows = queue_rows(s, qfilter, engine_versions(console.engine), viewer)
    data = [
        [
            r.case_pk,
            r.case_id,
            r.status,
            r.region,
            r.request_type,
            r.expected,
            r.decisions.get("base") or "",
            r.decisions.get("finetuned") or "",
            ", ".join(r.flags),
            ", ".join(r.violations),
            r.priority,
        ]
        for r in rows
    ]
    return pd.DataFrame(data, columns=COLUMNS)


def create_queue_tab(console: Console) -> QueueTab:
    """Declare the Queue tab's widgets and wire its events."""
    with gr.Row():
        status = gr.Dropdown([ANY, *REVIEW_STATUSES], value=ANY, label="Status")
        flag = gr.Dropdown([ANY, *FLAGS], value=ANY, label="Flag")
        region = gr.Dropdown([ANY, *REGIONS], value=ANY, label="Region")
        request_type = gr.Dropdown([ANY, *REQUEST_TYPES], value=ANY, label="Request type")
        disagree = gr.Checkbox(label="Models disagree only")
        preset = gr.Dropdown(
            [ANY, *((label, key) for key, label in PRESETS.items())],
            value=ANY,
            label="Preset",
            elem_id="preset",
        )
    refresh = gr.Button("Refresh queue")
    gr.Markdown("Cases needing a human come first. Click a row to open the case.")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="queue-table", wrap=True)
    filters = [status, flag, region, request_type, disagree, preset]

    def show(
        status_v: str,
        flag_v: str,
        region_v: str,
        rtype_v: str,
        disagree_v: bool,
        preset_v: str,
        request: gr.Request,
    ) -> pd.DataFrame:
        user = require(console, request, "compare")
        qfilter = queue_filter(status_v, flag_v, region_v, rtype_v, disagree_v, preset_v)
        return queue_frame(console, qfilter, user)

    for widget in (refresh,):
        widget.click(show, filters, table, api_visibility="private")
    for widget in filters:
        widget.change(show, filters, table, api_visibility="private")
    bulk = create_queue_tools(console, filters, table, lambda f, user: queue_frame(console, f, user))
    return QueueTab(table=table, refresh=refresh, filters=filters, gated=[(bulk, "approve")])
