"""Reviews tab: the audit log of reviews (a correction shows as a diff against the model answer it
started from), and second opinions: the share ops set, the adjudication queue, inter-reviewer
agreement (Cohen's kappa) next to each model's agreement with reviewers. Reviewer role or above."""

from __future__ import annotations

from html import escape
from typing import Any

import gradio as gr
import pandas as pd
from gradio.blocks import Block

from app.services.metrics import reviewer_agreement
from app.services.review_log import review_log
from app.services.second_opinion import (
    SettingError,
    adjudication_queue,
    inter_reviewer_agreement,
    second_opinion_share,
    set_second_opinion_share,
)
from app.ui.diffs import correction_diff_html
from app.ui.render import readable_figures
from app.ui.state import Console, require, user_errors
from db.users import PermissionDenied

LOG_LIMIT = 50


def log_html(console: Console, viewer: str) -> str:
    """The latest review entries of the audit log, corrections with their diffs (all escaped)."""
    with console.store.session() as s:
        entries = review_log(s, viewer, LOG_LIMIT)
    if not entries:
        return "<p>No review entries yet.</p>"
    items = []
    for e in entries:
        head = (
            f"#{e.entry_id} · {escape(e.at.strftime('%Y-%m-%d %H:%M:%S'))} · <b>{escape(e.actor)}</b> · "
            f"{escape(e.action)} · review {e.review_id} · case {escape(e.case_id or f'#{e.case_pk}')}"
        )
        diff = ""
        if e.correction is not None:
            c = e.correction
            diff = correction_diff_html(c.start, c.corrected, c.reviewer, c.review_id)
        items.append(f"<li class='audit-entry'>{head}{diff}</li>")
    return f"<ul class='audit-log'>{''.join(items)}</ul>"


def agreement_frame(console: Console) -> pd.DataFrame:
    """Inter-reviewer kappa (overall and per rule) and each model's agreement with reviewers, one table."""
    with console.store.session() as s:
        kappa, models = inter_reviewer_agreement(s), reviewer_agreement(s)
    rows = [
        {
            "who": "reviewer vs reviewer",
            "scope": r.scope,
            "kappa": r.kappa,
            "agreement": r.agreement,
            "n": r.n,
        }
        for r in kappa.itertuples()
    ]
    rows += [
        {
            "who": f"{r.variant} vs reviewers",
            "scope": "overall",
            "kappa": None,
            "agreement": r.agreement,
            "n": r.n,
        }
        for r in models.itertuples()
    ]
    frame = pd.DataFrame(rows, columns=["who", "scope", "kappa", "agreement", "n"])
    return readable_figures(frame, percent=("agreement",), decimals=("kappa",))


def create_review_tab(console: Console) -> None:
    """Declare the Reviews tab's widgets and wire its events."""
    refresh = gr.Button("Refresh", elem_id="reviews-refresh")
    with gr.Accordion("Second opinions", open=True):
        with gr.Row():
            share = gr.Slider(0, 100, step=1, label="Cases reviewed twice (%) — ops", elem_id="so-share")
            save_share = gr.Button("Save share", elem_id="so-save")
        share_msg = gr.Markdown()
        adjudication = gr.Dataframe(interactive=False, label="Adjudication queue (reviewers disagree)")
        agreement = gr.Dataframe(interactive=False, label="Agreement: Cohen's kappa and model agreement")
    gr.Markdown("### Audit log (reviews)")
    log = gr.HTML(elem_id="audit-log")

    def show(request: gr.Request) -> dict[Block, Any]:
        user = require(console, request, "approve")
        with console.store.session() as s:
            pct, queue = second_opinion_share(s) * 100, adjudication_queue(s)
        return {
            share: pct,
            adjudication: queue,
            agreement: agreement_frame(console),
            log: log_html(console, user),
        }

    def set_share(pct: float, request: gr.Request) -> str:
        user = require(console, request, "configure_reviews")
        try:
            with user_errors(), console.store.session() as s:
                set_second_opinion_share(s, user, float(pct) / 100)
        except (SettingError, PermissionDenied) as exc:
            raise gr.Error(str(exc)) from exc
        return f"Saved: {pct:.0f}% of cases get a second opinion."

    refresh.click(show, None, [share, adjudication, agreement, log], api_visibility="private")
    save_share.click(set_share, [share], [share_msg], api_visibility="private")
