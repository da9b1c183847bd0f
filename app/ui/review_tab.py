"""Reviews tab: the audit log of reviews (a correction shows as a diff against the model answer it
started from), and second opinions: the share ops set, the adjudication queue, inter-reviewer
agreement (Cohen's kappa) next to each model's agreement with reviewers. Reviewer role or above.
Loads when the tab is opened."""

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
from app.ui.state import Console, TabLoad, require, user_errors
from db.users import PermissionDenied

LOG_LIMIT = 50
AGREEMENT_COLUMNS = ["who", "scope", "kappa", "agreement", "n"]
ADJUDICATION_COLUMNS = ["case_pk", "case_id", "rule", "first", "first_verdict", "second", "second_verdict"]


def log_html(console: Console, viewer: str) -> str:
    """The latest review entries of the audit log, corrections with their diffs (all escaped)."""
    with console.store.session() as s:
        entries = review_log(s, viewer, LOG_LIMIT)
    if not entries:
        return "<p>No reviews yet: approvals, corrections and flags show here as they are made.</p>"
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
    frame = pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
    return readable_figures(frame, percent=("agreement",), decimals=("kappa",))


def create_review_tab(console: Console) -> TabLoad:
    """Declare the Reviews tab's widgets and wire its events; returns what opening the tab loads."""
    refresh = gr.Button("Refresh", elem_id="reviews-refresh", size="sm")
    with gr.Accordion("Second opinions", open=True):
        with gr.Row():
            share = gr.Slider(0, 100, step=1, label="Cases reviewed twice (%) — ops", elem_id="so-share")
            save_share = gr.Button("Save share", elem_id="so-save")
        share_msg = gr.Markdown()
        adjudication_note = gr.Markdown(elem_id="adjudication-note")
        adjudication = gr.Dataframe(
            pd.DataFrame(columns=ADJUDICATION_COLUMNS),
            interactive=False,
            label="Adjudication queue (reviewers disagree)",
            elem_id="adjudication",
        )
        agreement_note = gr.Markdown(elem_id="agreement-note")
        agreement = gr.Dataframe(
            pd.DataFrame(columns=AGREEMENT_COLUMNS),
            interactive=False,
            label="Agreement: Cohen's kappa and model agreement",
            elem_id="agreement",
        )
    gr.Markdown("### Audit log (reviews)")
    log = gr.HTML(elem_id="audit-log")

    def show(request: gr.Request) -> dict[Block, Any]:
        user = require(console, request, "approve")
        with console.store.session() as s:
            pct, queue = second_opinion_share(s) * 100, adjudication_queue(s)
        agreed = agreement_frame(console)
        return {
            share: pct,
            adjudication_note: f"{len(queue)} cases wait for a third reviewer."
            if len(queue) else "No case waits for adjudication: no two reviewers disagree.",
            adjudication: queue,
            agreement_note: "" if len(agreed) else "No reviews yet: agreement shows once cases are reviewed.",
            agreement: agreed,
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

    outputs = [share, adjudication_note, adjudication, agreement_note, agreement, log]
    refresh.click(show, None, outputs, api_visibility="private")
    save_share.click(set_share, [share], [share_msg], api_visibility="private")
    return TabLoad(show=show, outputs=outputs, need="approve")
