"""Queue tab: every case with its status, flags and the models' decisions, neediest first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.services.answers import engine_versions
from app.services.queue import PRESETS, QueueFilter, QueueRow, queue_counts, queue_rows
from app.ui.queue_tools import create_queue_tools, queue_filter
from app.ui.state import Console, require
from db.models import REVIEW_STATUSES
from policies import FLAGS
from policies.schema import REGIONS, REQUEST_TYPES

# (header, width): short headers that fit on one line; what decides the order (priority, violations,
# flags, disagreement) comes right after the case id, so it shows without scrolling sideways. "#" is
# the case's row id and stays first: a click on a row opens ``row[0]``.
COLUMN_SPECS = (
    ("#", "56px"),
    ("case", "120px"),
    ("prio.", "64px"),
    ("viol.", "200px"),
    ("flags", "180px"),
    ("disagree", "84px"),
    ("status", "136px"),
    ("guard", "196px"),
    ("ft", "196px"),
    ("base", "196px"),
    ("region", "72px"),
    ("request", "124px"),
)
COLUMNS = [name for name, _ in COLUMN_SPECS]
TABLE_HEIGHT = 720  # px: about 20 one-line rows; the rest scroll
ANY = "(any)"


@dataclass
class QueueTab:
    table: gr.Dataframe
    counts: gr.Markdown  # "N matching · M pending · ..." for the table's filter
    refresh: gr.Button
    filters: list[gr.components.Component]
    gated: list[tuple[gr.blocks.Block, str]]  # (component, the permission it needs to be shown)
    view: Callable[[QueueFilter, str | None], dict[Block, Any]]  # {table: rows, counts: line}
    show: Callable[..., dict[Block, Any]]  # (filter values, request) -> {table, counts}: Refresh


def _cells(r: QueueRow) -> list[Any]:
    shown_flags = [f for f in r.flags if f != "MODELS_DISAGREE"]  # it has a column of its own
    return [
        r.case_pk,
        r.case_id,
        r.priority,
        ", ".join(r.violations),
        ", ".join(shown_flags),
        "yes" if r.disagree else "",
        r.status,
        r.expected,
        r.decisions.get("finetuned") or "",
        r.decisions.get("base") or "",
        r.region,
        r.request_type,
    ]


def queue_table(
    console: Console, qfilter: QueueFilter, viewer: str | None = None
) -> tuple[pd.DataFrame, str]:
    """The queue as ``viewer`` sees it, and its counts line (sorting and filtering happen in
    :func:`app.services.queue.queue_rows`)."""
    with console.store.session() as s:
        rows = queue_rows(s, qfilter, engine_versions(console.engine), viewer)
    counts = queue_counts(rows).sentence()
    if not rows:
        counts += " — no case matches this filter."
    return pd.DataFrame([_cells(r) for r in rows], columns=COLUMNS), counts


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
    with gr.Row(equal_height=True):
        counts = gr.Markdown(elem_id="queue-counts")
        refresh = gr.Button("Refresh queue", scale=0, min_width=140)
    gr.Markdown(
        "Cases needing a human come first (**prio.**: need for a human, highest first; **viol.**: the "
        "guard's violations in a model answer; **guard**: the rule engine's expected decision; **ft**: "
        "the fine-tuned model's). Click a row to open the case."
    )
    table = gr.Dataframe(
        headers=COLUMNS,
        interactive=False,
        elem_id="queue-table",
        wrap=False,  # one line per case: more rows in view, headers never break into letters
        column_widths=[width for _, width in COLUMN_SPECS],
        pinned_columns=2,  # "#" and the case id stay in view when scrolling sideways
        max_height=TABLE_HEIGHT,
    )
    filters = [status, flag, region, request_type, disagree, preset]

    def view(qfilter: QueueFilter, user: str | None) -> dict[Block, Any]:
        frame, line = queue_table(console, qfilter, user)
        return {table: frame, counts: line}

    def show(
        status_v: str,
        flag_v: str,
        region_v: str,
        rtype_v: str,
        disagree_v: bool,
        preset_v: str,
        request: gr.Request,
    ) -> dict[Block, Any]:
        user = require(console, request, "compare")
        return view(queue_filter(status_v, flag_v, region_v, rtype_v, disagree_v, preset_v), user)

    refresh.click(show, filters, [table, counts], api_visibility="private")
    for widget in filters:
        widget.change(show, filters, [table, counts], api_visibility="private")
    bulk = create_queue_tools(console, filters, [table, counts], view)
    return QueueTab(
        table=table, counts=counts, refresh=refresh, filters=filters, gated=[(bulk, "approve")], view=view,
        show=show,
    )
